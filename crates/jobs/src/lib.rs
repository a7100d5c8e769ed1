//! The job message and the queue topology, shared by the producer (api), the consumer
//! (worker) and the runner (which reconciles and cleans up).

pub mod broker;
pub mod stamp;
pub mod trace;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Channel;
use serde::{Deserialize, Serialize};

pub const MAX_ID_LEN: usize = 128;
pub const MAX_AMOUNT: i64 = 1_000_000;

/// A job as submitted to `POST /jobs` and carried on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Chosen by the client; the idempotency key.
    pub id: String,
    /// The side effect's size: one ledger row carries it.
    pub amount: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("`id` must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -")]
    BadId,
    #[error("`amount` must be an integer from 1 to {MAX_AMOUNT}")]
    BadAmount,
    #[error("payload is not a job: {0}")]
    Malformed(String),
}

impl Job {
    pub fn validate(&self) -> Result<(), JobError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_ID_LEN
            && self.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(JobError::BadId);
        }
        if !(1..=MAX_AMOUNT).contains(&self.amount) {
            return Err(JobError::BadAmount);
        }
        Ok(())
    }

    /// Parses and validates a payload from the queue.
    pub fn from_payload(bytes: &[u8]) -> Result<Job, JobError> {
        let job: Job = serde_json::from_slice(bytes).map_err(|e| JobError::Malformed(e.to_string()))?;
        job.validate()?;
        Ok(job)
    }

    pub fn to_payload(&self) -> Vec<u8> {
        // Serialising two plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The work queue and its dead-letter queue. Declared identically by everyone who
/// touches them (declaring is idempotent only with identical arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub queue: String,
}

impl Topology {
    pub fn new(queue: impl Into<String>) -> Self {
        Topology { queue: queue.into() }
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// Declares the dead-letter queue, then the work queue routing rejected messages
    /// to it through the default exchange.
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(self.dead_letter_queue().into(), durable, FieldTable::default()).await?;
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString("".into()));
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(self.dead_letter_queue().into()),
        );
        ch.queue_declare(self.queue.as_str().into(), durable, args).await?;
        Ok(())
    }

    /// Messages ready in (work queue, dead-letter queue). Unacked deliveries are not
    /// counted by the broker here.
    pub async fn depths(&self, ch: &Channel) -> Result<(u32, u32), lapin::Error> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = ch.queue_declare(self.queue.as_str().into(), passive, FieldTable::default()).await?;
        let d = ch.queue_declare(self.dead_letter_queue().into(), passive, FieldTable::default()).await?;
        Ok((q.message_count(), d.message_count()))
    }

    /// Deletes both queues. Only ever called on queues this project created.
    pub async fn delete(&self, ch: &Channel) -> Result<(), lapin::Error> {
        ch.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await?;
        ch.queue_delete(self.dead_letter_queue().into(), QueueDeleteOptions::default()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(Job { id: "a-1".into(), amount: 5 }.validate().is_ok());
        assert_eq!(Job { id: "".into(), amount: 5 }.validate(), Err(JobError::BadId));
        assert_eq!(Job { id: "a b".into(), amount: 5 }.validate(), Err(JobError::BadId));
        assert_eq!(Job { id: "x".repeat(129), amount: 5 }.validate(), Err(JobError::BadId));
        assert_eq!(Job { id: "a".into(), amount: 0 }.validate(), Err(JobError::BadAmount));
        assert_eq!(Job { id: "a".into(), amount: MAX_AMOUNT + 1 }.validate(), Err(JobError::BadAmount));
    }

    #[test]
    fn payload_round_trip_and_poison() {
        let j = Job { id: "r-1".into(), amount: 7 };
        assert_eq!(Job::from_payload(&j.to_payload()).unwrap(), j);
        assert!(matches!(Job::from_payload(b"not json"), Err(JobError::Malformed(_))));
        assert!(matches!(Job::from_payload(br#"{"id":"a","amount":"7"}"#), Err(JobError::Malformed(_))));
        assert!(matches!(Job::from_payload(br#"{"id":"a","amount":1,"x":1}"#), Err(JobError::Malformed(_))));
    }
}
