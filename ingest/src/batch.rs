//! Group commit: concurrent webhooks share one database round trip instead of each
//! waiting for its own commit.
//!
//! A request hands its item to a [`Batcher`] and waits for its answer. The batcher's
//! task takes everything waiting (up to [`Limits::max_items`]) as soon as a batch slot
//! is free, and runs one statement or transaction for all of it. It never waits on a
//! timer: a lone request goes straight through, and under load the requests that
//! arrive while a batch runs make up the next one.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// One kind of database work done for many requests at once.
pub(crate) trait Job: Send + Sync + 'static {
    /// What one request asks for.
    type Item: Send + 'static;
    /// What one request gets back.
    type Output: Send + 'static;

    /// Does the work of `items` together; on success, one output per item, in order.
    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Self::Output>, sqlx::Error>> + Send;

    /// What the work is, for the log line of a failed batch.
    fn name(&self) -> &'static str;
}

/// How big batches get and how many run at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most items in one batch.
    pub(crate) max_items: usize,
    /// Most batches running at once (each holds one database connection).
    pub(crate) in_flight: usize,
}

impl Limits {
    /// The webhook path's: claims and audit rows of up to 512 webhooks per statement,
    /// one statement at a time each (two of the pool's connections in all). Under load
    /// everything that arrives while a statement runs makes up the next one; a second
    /// statement in flight only split the load into more, smaller commits, and each
    /// commit's fixed cost is what PostgreSQL spends its CPU on.
    pub(crate) const WEBHOOKS: Self = Self {
        max_items: 512,
        in_flight: 1,
    };
}

/// The batch holding an item failed as a whole: nothing of it was written.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the database write shared with concurrent webhooks failed")]
pub(crate) struct BatchFailed;

type Request<J> = (
    <J as Job>::Item,
    oneshot::Sender<Result<<J as Job>::Output, BatchFailed>>,
);

/// Runs a [`Job`] for concurrent requests in shared batches.
pub(crate) struct Batcher<J: Job> {
    queue: mpsc::Sender<Request<J>>,
}

impl<J: Job> Batcher<J> {
    /// Starts the batching task; it ends once the batcher is dropped and every batch
    /// taken has been answered.
    pub(crate) fn start(job: J, limits: Limits) -> Self {
        // Bounded so that a stalled database slows webhooks down rather than growing
        // memory; the HTTP server's connection cap bounds the waiters anyway.
        let (queue, requests) = mpsc::channel(limits.max_items * limits.in_flight * 4);
        tokio::spawn(dispatch(Arc::new(job), requests, limits));
        Self { queue }
    }

    /// Runs `item` in the next batch and returns its answer.
    pub(crate) async fn submit(&self, item: J::Item) -> Result<J::Output, BatchFailed> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((item, answer))
            .await
            .map_err(|_| BatchFailed)?;
        // A dropped sender means the batch task panicked: nothing is known written.
        answered.await.unwrap_or(Err(BatchFailed))
    }
}

async fn dispatch<J: Job>(job: Arc<J>, mut requests: mpsc::Receiver<Request<J>>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    loop {
        // Wait for a free slot first: what arrives meanwhile joins the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(limits.max_items);
        if requests.recv_many(&mut batch, limits.max_items).await == 0 {
            return;
        }
        let job = Arc::clone(&job);
        tokio::spawn(async move {
            run(&*job, batch).await;
            drop(slot);
        });
    }
}

async fn run<J: Job>(job: &J, batch: Vec<Request<J>>) {
    let (items, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let size = items.len();
    match job.run(items).await {
        Ok(outputs) if outputs.len() == size => {
            for (answer, output) in answers.into_iter().zip(outputs) {
                let _ = answer.send(Ok(output));
            }
        }
        Ok(outputs) => {
            tracing::error!(
                job = job.name(),
                batch.size = size,
                outputs = outputs.len(),
                "a batch gave the wrong number of answers; its webhooks are refused"
            );
            fail(answers);
        }
        Err(err) => {
            // Logged once for the batch, here; each webhook answers 503.
            tracing::error!(job = job.name(), batch.size = size, error = %err, "batched database write failed");
            fail(answers);
        }
    }
}

fn fail<O>(answers: Vec<oneshot::Sender<Result<O, BatchFailed>>>) {
    for answer in answers {
        let _ = answer.send(Err(BatchFailed));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Doubles numbers, one batch per permit of `gate`, remembering each batch's size;
    /// fails a batch holding 0.
    struct Double {
        sizes: Arc<Mutex<Vec<usize>>>,
        gate: Arc<Semaphore>,
    }

    impl Default for Double {
        fn default() -> Self {
            Self {
                sizes: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
            }
        }
    }

    impl Job for Double {
        type Item = u32;
        type Output = u32;

        async fn run(&self, items: Vec<u32>) -> Result<Vec<u32>, sqlx::Error> {
            self.sizes.lock().unwrap().push(items.len());
            self.gate.acquire().await.unwrap().forget();
            if items.contains(&0) {
                return Err(sqlx::Error::PoolClosed);
            }
            Ok(items.into_iter().map(|n| n * 2).collect())
        }

        fn name(&self) -> &'static str {
            "double"
        }
    }

    const ONE_AT_A_TIME: Limits = Limits {
        max_items: 4,
        in_flight: 1,
    };

    /// Submits each of `items` from its own task, once the batch in flight has started,
    /// and returns once all of them wait in the queue.
    async fn queue_behind_a_running_batch(
        batcher: &Arc<Batcher<Double>>,
        sizes: &Mutex<Vec<usize>>,
        items: &[u32],
    ) -> Vec<tokio::task::JoinHandle<Result<u32, BatchFailed>>> {
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let handles = items
            .iter()
            .map(|&n| {
                let batcher = Arc::clone(batcher);
                tokio::spawn(async move { batcher.submit(n).await })
            })
            .collect();
        let queue = &batcher.queue;
        while queue.max_capacity() - queue.capacity() < items.len() {
            tokio::task::yield_now().await;
        }
        handles
    }

    #[tokio::test]
    async fn waiting_items_share_the_next_batch_up_to_its_limit() {
        let job = Double::default();
        let (sizes, gate) = (Arc::clone(&job.sizes), Arc::clone(&job.gate));
        let batcher = Arc::new(Batcher::start(job, ONE_AT_A_TIME));
        let first = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.submit(21).await })
        };
        let waiting = queue_behind_a_running_batch(&batcher, &sizes, &[1, 2, 3, 4, 5]).await;
        gate.add_permits(3);
        assert_eq!(first.await.unwrap().unwrap(), 42);
        let mut answers = Vec::new();
        for handle in waiting {
            answers.push(handle.await.unwrap().unwrap());
        }
        assert_eq!(answers, [2, 4, 6, 8, 10]);
        assert_eq!(*sizes.lock().unwrap(), [1, 4, 1]);
    }

    #[tokio::test]
    async fn every_item_of_a_failed_batch_fails_and_the_next_batch_still_runs() {
        let job = Double::default();
        let (sizes, gate) = (Arc::clone(&job.sizes), Arc::clone(&job.gate));
        let batcher = Arc::new(Batcher::start(job, ONE_AT_A_TIME));
        let first = {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { batcher.submit(7).await })
        };
        let waiting = queue_behind_a_running_batch(&batcher, &sizes, &[1, 0, 2]).await;
        gate.add_permits(3);
        assert_eq!(first.await.unwrap().unwrap(), 14);
        for handle in waiting {
            assert!(handle.await.unwrap().is_err());
        }
        assert_eq!(batcher.submit(5).await.unwrap(), 10);
        assert_eq!(*sizes.lock().unwrap(), [1, 3, 1]);
    }
}
