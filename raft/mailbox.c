/*
 * Mailbox: hand work from any thread to one libuv loop (see mailbox.h).
 *
 * The list is guarded by a mutex. A post wakes the loop only when it makes
 * the list non-empty: the loop takes the whole list in one go, so one
 * uv_async_send per batch is enough, and a burst of posts costs one wake-up.
 * uv_async_send is called under the lock so that it can never race with
 * the uv_close of mailbox_close (which sets `closed` under the same lock).
 */
#include "mailbox.h"

#include <assert.h>
#include <stddef.h>

static struct mailbox_item *mailbox_take_all(struct mailbox *box)
{
    pthread_mutex_lock(&box->lock);
    struct mailbox_item *items = box->head;
    box->head = NULL;
    box->tail = NULL;
    pthread_mutex_unlock(&box->lock);
    return items;
}

static void mailbox_async_cb(uv_async_t *async)
{
    struct mailbox *box = async->data;
    struct mailbox_item *items = mailbox_take_all(box);
    if (items != NULL) {
        box->deliver(box, items);
    }
}

int mailbox_init(uv_loop_t *loop, struct mailbox *box, mailbox_deliver_cb deliver)
{
    box->head = NULL;
    box->tail = NULL;
    box->closed = false;
    box->deliver = deliver;
    int rv = pthread_mutex_init(&box->lock, NULL);
    if (rv != 0) {
        return UV_ENOMEM;
    }
    rv = uv_async_init(loop, &box->async, mailbox_async_cb);
    if (rv != 0) {
        pthread_mutex_destroy(&box->lock);
        return rv;
    }
    box->async.data = box;
    return 0;
}

bool mailbox_post(struct mailbox *box, struct mailbox_item *item)
{
    item->next = NULL;
    pthread_mutex_lock(&box->lock);
    if (box->closed) {
        pthread_mutex_unlock(&box->lock);
        return false;
    }
    bool was_empty = box->head == NULL;
    if (was_empty) {
        box->head = item;
    } else {
        box->tail->next = item;
    }
    box->tail = item;
    if (was_empty) {
        uv_async_send(&box->async);
    }
    pthread_mutex_unlock(&box->lock);
    return true;
}

static void mailbox_closed_cb(uv_handle_t *handle)
{
    struct mailbox *box = handle->data;
    pthread_mutex_destroy(&box->lock);
    if (box->close_cb != NULL) {
        box->close_cb(box);
    }
}

void mailbox_close(struct mailbox *box, void (*close_cb)(struct mailbox *box))
{
    pthread_mutex_lock(&box->lock);
    assert(!box->closed);
    box->closed = true;
    pthread_mutex_unlock(&box->lock);
    /* Deliver what was posted before the close, one last time. */
    struct mailbox_item *items = mailbox_take_all(box);
    if (items != NULL) {
        box->deliver(box, items);
    }
    box->close_cb = close_cb;
    uv_close((uv_handle_t *)&box->async, mailbox_closed_cb);
}
