//! A [`JoinHandle`] is a [`Future`]: async code on the greenlet's hub
//! (a future inside [`wait_future`](super::wait_future), or a local
//! executor driven by a greenlet) awaits its result.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Error;
use crate::hub::JoinHandle;

impl<T: 'static> Future for JoinHandle<T> {
    type Output = Result<T, Error>;

    /// Ready with the greenlet's result once it has finished (as
    /// [`join`](JoinHandle::join) returns it); until then, the task's
    /// waker is woken when it finishes (the latest waker polled with).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.is_ready() {
            return Poll::Ready(this.take());
        }
        this.set_waker(cx.waker());
        Poll::Pending
    }
}
