//! The queue consumer and what it stands on: exactly-once claims (`idempotency`),
//! normalization into common models (`normalize`), the record store and its conflict
//! rules (`records`), whose a delivery is (`accounts`), when each connection last
//! heard from its provider (`last_events`), the consumer itself
//! (`consumer`), its log lines (`log`), the dead-letter notes an operator reads
//! (`dead_letters`) and the shapes of provider payloads, to hear of schema drift (`drift`).

pub mod accounts;
pub mod consumer;
pub mod dead_letters;
pub mod drift;
pub mod idempotency;
pub mod last_events;
pub mod log;
pub mod normalize;
pub mod records;
pub mod settings;
