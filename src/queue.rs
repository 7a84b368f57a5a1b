//! The queue: the hand-over point between the sessions and delivery.
//!
//! Sessions [`Queue::submit`] messages (durable on return); delivery waits on
//! [`Queue::notified`] and otherwise polls the store, which also picks up
//! changes the admin CLI made from another process.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::dkim::Signer;
use crate::store::{NewMessage, QueueId, Store, StoreError, new_queue_id};

pub struct Queue {
    store: Arc<dyn Store>,
    wake: Notify,
}

impl Queue {
    pub fn new(store: Arc<dyn Store>) -> Queue {
        Queue {
            store,
            wake: Notify::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stores the message durably, then wakes delivery.
    pub async fn submit(&self, msg: NewMessage) -> Result<QueueId, StoreError> {
        let id = self.store.enqueue(msg).await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Wakes the scheduler for a message stored some other way (a bounce
    /// notice recorded with its delivery attempt).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when a new message was submitted.
    pub async fn notified(&self) {
        self.wake.notified().await
    }
}

/// A notice from the gateway to a staff member (link password, PII warning,
/// first download), DKIM-signed like any relayed message and sent from the
/// system address so bounces come back to the county.
pub fn staff_notice(
    signer: &Signer,
    system_address: &str,
    account: &str,
    staff: &str,
    mut content: Vec<u8>,
) -> NewMessage {
    if let Ok(Some(signature)) = signer.sign(&content) {
        content.splice(0..0, signature);
    }
    NewMessage {
        id: new_queue_id(),
        account: account.to_owned(),
        sender: system_address.to_owned(),
        // A notice that bounces is the county's business, not the staff
        // member's whose address failed.
        dsn_to: Some(system_address.to_owned()),
        recipients: vec![staff.to_owned()],
        content,
        ..NewMessage::default()
    }
}
