//! Collecting a batch: up to `size` deliveries, taken as they are already there, so a
//! lone signal on an idle system is executed at once instead of waiting for company.
//!
//! The first delivery is awaited; after it, the batch takes whatever else is ready
//! without waiting, and stops when nothing is ready, when it is full, or when the
//! timeout since the first delivery has passed (deliveries arriving back to back).

use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::Instant;

/// The bounds of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBounds {
    /// Most deliveries in one batch.
    pub size: usize,
    /// Longest time spent filling one batch after its first delivery.
    pub timeout: Duration,
}

/// What collecting produced.
#[derive(Debug)]
pub enum Collected<T, E> {
    /// A non-empty batch.
    Batch(Vec<T>),
    /// The stream failed; any deliveries taken before the failure come with it.
    Failed(Vec<T>, E),
    /// The stream ended.
    Ended,
}

/// Waits for the next delivery, then fills the batch with what is ready.
pub async fn collect<T, E, S>(stream: &mut S, bounds: BatchBounds) -> Collected<T, E>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    let first = match stream.next().await {
        Some(Ok(first)) => first,
        Some(Err(err)) => return Collected::Failed(Vec::new(), err),
        None => return Collected::Ended,
    };
    let deadline = Instant::now() + bounds.timeout;
    let mut batch = vec![first];
    while batch.len() < bounds.size.max(1) && Instant::now() < deadline {
        let mut next = stream.next().now_or_never();
        if next.is_none() {
            // Let the broker connection hand over what it has already read.
            tokio::task::yield_now().await;
            next = stream.next().now_or_never();
        }
        match next {
            Some(Some(Ok(item))) => batch.push(item),
            Some(Some(Err(err))) => return Collected::Failed(batch, err),
            Some(None) | None => break,
        }
    }
    Collected::Batch(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    const BOUNDS: BatchBounds = BatchBounds {
        size: 10,
        timeout: Duration::from_secs(1),
    };

    fn sizes<E>(collected: &Collected<u32, E>) -> usize {
        match collected {
            Collected::Batch(b) | Collected::Failed(b, _) => b.len(),
            Collected::Ended => 0,
        }
    }

    #[tokio::test]
    async fn ready_deliveries_fill_batches_up_to_the_size() {
        let mut ready = stream::iter((0..25).map(Ok::<u32, ()>));
        let mut got = Vec::new();
        loop {
            let c = collect(&mut ready, BOUNDS).await;
            if matches!(c, Collected::Ended) {
                break;
            }
            got.push(sizes(&c));
        }
        assert_eq!(got, vec![10, 10, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_delivery_is_returned_without_waiting() {
        let mut lone = stream::iter([Ok::<u32, ()>(7)]).chain(stream::pending());
        let started = Instant::now();
        let c = collect(&mut lone, BOUNDS).await;
        assert!(matches!(c, Collected::Batch(ref b) if b == &[7]));
        // With the clock paused, any timer wait would have advanced it.
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_error_keeps_what_was_taken() {
        let mut failing = stream::iter([Ok(1u32), Ok(2), Err("gone")]);
        match collect(&mut failing, BOUNDS).await {
            Collected::Failed(batch, err) => {
                assert_eq!(batch, vec![1, 2]);
                assert_eq!(err, "gone");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
