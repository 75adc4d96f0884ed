/*
 * Mailbox: hand work from any thread to one libuv loop.
 *
 * Posting is a mutex-protected append plus uv_async_send(); the loop drains
 * everything posted since its last wake-up in one callback, in posting order.
 * Many posts coalesce into one wake-up: this is what lets a Raft group see
 * a burst of concurrent requests at once and pack them into one entry.
 */
#ifndef GS_RAFT_MAILBOX_H
#define GS_RAFT_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>

#include <uv.h>

struct mailbox_item {
    struct mailbox_item *next;
};

struct mailbox;
/* Called on the mailbox's loop with the drained items as a list (oldest
 * first, linked by ->next, NULL-terminated). */
typedef void (*mailbox_deliver_cb)(struct mailbox *box, struct mailbox_item *items);

struct mailbox {
    uv_async_t async;          /* internal; use ->data for the owner */
    pthread_mutex_t lock;
    struct mailbox_item *head; /* guarded by lock */
    struct mailbox_item *tail;
    bool closed;               /* guarded by lock */
    mailbox_deliver_cb deliver;
    void (*close_cb)(struct mailbox *box);
    void *data;                /* owner's */
};

/* Initialize on loop (call on the loop's thread). Returns 0 or a uv error. */
int mailbox_init(uv_loop_t *loop, struct mailbox *box, mailbox_deliver_cb deliver);

/* Post from any thread. Returns false (and keeps nothing) once the mailbox
 * is closed: the caller still owns the item. */
bool mailbox_post(struct mailbox *box, struct mailbox_item *item);

/* Close (on the loop's thread): later posts fail; items still queued are
 * delivered one last time before close_cb. The struct must stay valid until
 * close_cb(box) runs. */
void mailbox_close(struct mailbox *box, void (*close_cb)(struct mailbox *box));

#endif /* GS_RAFT_MAILBOX_H */
