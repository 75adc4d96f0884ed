#include "applier.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../engine/log.h"
#include "geoscale/errors.h"

/* Linux: niceness is per thread (PRIO_PROCESS with a thread id). Called
 * with the lock held; a no-op until the thread has probed (tid known). */
static void applier_renice(struct applier *a)
{
    int want = a->base_nice + (a->boosted ? 0 : a->nice);
    if (!a->renice_ok || setpriority(PRIO_PROCESS, (id_t)a->tid, want) == 0) {
        return;
    }
    log_warn("applier", "event=nice_failed nice=%d error=\"%s\"", want, strerror(errno));
}

/* Back to the base priority until the queue is empty (lock held): the
 * pusher is waiting, or about to, for an applier that a busy machine could
 * otherwise starve. */
static void applier_boost(struct applier *a)
{
    if (!a->boosted && a->nice != 0) {
        a->boosted = true;
        applier_renice(a);
    }
}

/* Raising a thread's niceness needs no privilege, lowering it back does
 * (CAP_SYS_NICE, or RLIMIT_NICE). An applier that could not come back to
 * its base priority, e.g. when its group becomes leader, would be worse off
 * than one never reniced: try a step up and back first. */
static bool applier_probe_renice(struct applier *a)
{
    if (setpriority(PRIO_PROCESS, (id_t)a->tid, a->base_nice + 1) != 0) {
        return false;
    }
    if (setpriority(PRIO_PROCESS, (id_t)a->tid, a->base_nice) != 0) {
        log_info("applier", "event=renice_unavailable detail=\"cannot lower niceness (no "
                            "CAP_SYS_NICE or RLIMIT_NICE): applies are not reniced\"");
        return false;
    }
    return true;
}

static void *applier_main(void *arg)
{
    struct applier *a = arg;
    pthread_mutex_lock(&a->lock);
    a->tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)a->tid);
    a->base_nice = cur == -1 && errno != 0 ? 0 : cur;
    a->renice_ok = applier_probe_renice(a);
    if (a->nice != 0 && !a->boosted) {
        applier_renice(a);
    }
    for (;;) {
        while (a->head == NULL && !a->stop) {
            pthread_cond_wait(&a->work, &a->lock);
        }
        struct applier_item *it = a->head;
        if (it == NULL) {
            break; /* stopping, and nothing left */
        }
        a->head = it->next;
        if (a->head == NULL) {
            a->tail = NULL;
        }
        size_t bytes = it->bytes;
        pthread_mutex_unlock(&a->lock);
        a->run(a->arg, it);
        pthread_mutex_lock(&a->lock);
        /* Counted until it has run: drain waits for running items too. */
        a->n_items--;
        a->n_bytes -= bytes;
        if (a->n_items == 0 && a->boosted) {
            a->boosted = false;
            applier_renice(a);
        }
        pthread_cond_broadcast(&a->room);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int applier_start(struct applier *a, applier_run_fn run, void *arg, size_t max_items,
                  size_t max_bytes, int nice)
{
    memset(a, 0, sizeof *a);
    a->run = run;
    a->arg = arg;
    a->max_items = max_items > 0 ? max_items : 1;
    a->max_bytes = max_bytes;
    a->nice = nice;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->room, NULL);
    if (pthread_create(&a->thread, NULL, applier_main, a) != 0) {
        pthread_cond_destroy(&a->room);
        pthread_cond_destroy(&a->work);
        pthread_mutex_destroy(&a->lock);
        return GS_ENOMEM;
    }
    a->started = true;
    return 0;
}

void applier_push(struct applier *a, struct applier_item *item)
{
    item->next = NULL;
    pthread_mutex_lock(&a->lock);
    /* An item larger than max_bytes still goes in, alone. */
    struct timespec t0 = {0, 0};
    bool waited = false;
    while (a->n_items > 0 &&
           (a->n_items >= a->max_items || a->n_bytes + item->bytes > a->max_bytes)) {
        if (!waited) {
            clock_gettime(CLOCK_MONOTONIC, &t0);
            waited = true;
        }
        applier_boost(a);
        pthread_cond_wait(&a->room, &a->lock);
    }
    if (waited) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        a->push_wait_ns += (uint64_t)((int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 +
                                      (t1.tv_nsec - t0.tv_nsec));
    }
    if (a->tail != NULL) {
        a->tail->next = item;
    } else {
        a->head = item;
    }
    a->tail = item;
    a->n_items++;
    a->n_bytes += item->bytes;
    if (a->n_items * 2 >= a->max_items || a->n_bytes * 2 >= a->max_bytes) {
        applier_boost(a);
    }
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->lock);
}

void applier_drain(struct applier *a)
{
    if (!a->started) {
        return;
    }
    pthread_mutex_lock(&a->lock);
    if (a->n_items > 0) {
        applier_boost(a);
    }
    while (a->n_items > 0) {
        pthread_cond_wait(&a->room, &a->lock);
    }
    pthread_mutex_unlock(&a->lock);
}

bool applier_drain_within(struct applier *a, size_t max_bytes)
{
    if (!a->started) {
        return true;
    }
    pthread_mutex_lock(&a->lock);
    if (a->n_items > 0) {
        applier_boost(a);
    }
    bool drain = a->n_bytes <= max_bytes;
    while (drain && a->n_items > 0) {
        pthread_cond_wait(&a->room, &a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return drain;
}

bool applier_drain_deferred(struct applier *a, struct applier_deferral *d, size_t max_bytes,
                            uint64_t now, uint64_t max_ms, uint64_t *deferred_ms)
{
    if (d->first != 0 && now - d->last > max_ms) {
        d->first = 0; /* the caller stopped trying: a new series */
    }
    if (!applier_drain_within(a, max_bytes)) {
        if (d->first == 0) {
            d->first = now > 0 ? now : 1;
        }
        d->last = now;
        if (now - d->first < max_ms) {
            return false;
        }
        applier_drain(a);
    }
    if (deferred_ms != NULL) {
        *deferred_ms = d->first == 0 ? 0 : now - d->first;
    }
    d->first = 0;
    return true;
}

void applier_set_nice(struct applier *a, int nice)
{
    if (!a->started) {
        return;
    }
    pthread_mutex_lock(&a->lock);
    if (a->nice != nice) {
        a->nice = nice;
        applier_renice(a);
    }
    pthread_mutex_unlock(&a->lock);
}

uint64_t applier_push_wait_ns(struct applier *a)
{
    pthread_mutex_lock(&a->lock);
    uint64_t ns = a->push_wait_ns;
    pthread_mutex_unlock(&a->lock);
    return ns;
}

size_t applier_pending(struct applier *a)
{
    if (!a->started) {
        return 0;
    }
    pthread_mutex_lock(&a->lock);
    size_t n = a->n_items;
    pthread_mutex_unlock(&a->lock);
    return n;
}

void applier_stop(struct applier *a)
{
    if (!a->started) {
        return;
    }
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->room);
    pthread_cond_destroy(&a->work);
    pthread_mutex_destroy(&a->lock);
    a->started = false;
}
