/* Mailbox: ordering, coalescing, posts from other threads, close. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "raft/mailbox.h"

struct item {
    struct mailbox_item link;
    int value;
};

struct sink {
    int received[4096];
    size_t n;
    size_t deliveries;
    size_t expected;
};

static void deliver(struct mailbox *box, struct mailbox_item *items)
{
    struct sink *s = box->data;
    s->deliveries++;
    while (items != NULL) {
        struct item *it = (struct item *)items;
        items = items->next;
        s->received[s->n++] = it->value;
    }
    if (s->n == s->expected) {
        uv_stop(box->async.loop);
    }
}

static void test_order_and_coalescing(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct mailbox box;
    struct sink sink = {.expected = 100};
    assert_int_equal(mailbox_init(&loop, &box, deliver), 0);
    box.data = &sink;
    struct item items[100];
    for (int i = 0; i < 100; i++) {
        items[i].value = i;
        assert_true(mailbox_post(&box, &items[i].link));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(sink.n, 100);
    /* All 100 posts before the loop ran: one wake-up delivers them all. */
    assert_int_equal(sink.deliveries, 1);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(sink.received[i], i);
    }
    mailbox_close(&box, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

struct producer {
    struct mailbox *box;
    struct item items[1000];
    int base;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < 1000; i++) {
        p->items[i].value = p->base + i;
        if (!mailbox_post(p->box, &p->items[i].link)) {
            abort();
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct mailbox box;
    struct sink sink = {.expected = 4000};
    assert_int_equal(mailbox_init(&loop, &box, deliver), 0);
    box.data = &sink;
    struct producer *producers = calloc(4, sizeof *producers);
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) {
        producers[t].box = &box;
        producers[t].base = t * 1000;
        pthread_create(&threads[t], NULL, produce, &producers[t]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
    }
    assert_int_equal(sink.n, 4000);
    /* Each producer's items arrive in its own order, none lost or doubled. */
    int next[4] = {0, 1000, 2000, 3000};
    for (size_t i = 0; i < sink.n; i++) {
        int t = sink.received[i] / 1000;
        assert_int_equal(sink.received[i], next[t]);
        next[t]++;
    }
    mailbox_close(&box, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(producers);
}

static int closed_calls;
static void on_closed(struct mailbox *box)
{
    (void)box;
    closed_calls++;
}

static void test_close_delivers_then_refuses(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct mailbox box;
    struct sink sink = {.expected = 1000000};
    assert_int_equal(mailbox_init(&loop, &box, deliver), 0);
    box.data = &sink;
    struct item a = {.value = 7}, b = {.value = 8};
    assert_true(mailbox_post(&box, &a.link));
    closed_calls = 0;
    mailbox_close(&box, on_closed);
    /* Posted before the close: delivered by the close itself. */
    assert_int_equal(sink.n, 1);
    assert_int_equal(sink.received[0], 7);
    assert_false(mailbox_post(&box, &b.link));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed_calls, 1);
    assert_int_equal(sink.n, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_coalescing),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_close_delivers_then_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
