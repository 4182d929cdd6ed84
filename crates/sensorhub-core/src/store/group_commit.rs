//! The queue in front of an engine's writer, and how the writer takes a
//! group from it: the first command it waits for, then whatever else is
//! already queued, up to a number of readings. One group is one commit.
//!
//! Why here: both engines batch concurrent calls into one transaction the
//! same way (the embedded writer on a thread, the PostgreSQL writer on a
//! task), and the rules (a `Close` ends the group and is answered after
//! it; a group never waits for more) must not drift apart.
//!
//! Invariant: a group holds no command queued after a `Close`, and taking
//! one never waits once the first command is in.

use tokio::sync::{mpsc, oneshot};

/// What a store sends its writer.
#[derive(Debug)]
pub enum WriterCommand<W> {
    Write(W),
    /// Commit what is queued before this, stop, then answer.
    Close(oneshot::Sender<()>),
}

/// A write in the queue: how many readings it adds to a group.
pub trait QueuedWrite {
    fn readings(&self) -> usize;
}

/// One commit's worth of the queue.
#[derive(Debug)]
pub struct Group<W> {
    pub writes: Vec<W>,
    /// Set when a `Close` ended the group: answer it after the commit.
    pub close: Option<oneshot::Sender<()>>,
}

/// The group that starts with `first` (the command the writer waited for),
/// with the writes already queued behind it, until `max_readings` readings
/// or a `Close`.
pub fn take_group<W: QueuedWrite>(
    first: WriterCommand<W>,
    commands: &mut mpsc::Receiver<WriterCommand<W>>,
    max_readings: usize,
) -> Group<W> {
    let mut group = Group {
        writes: Vec::new(),
        close: None,
    };
    let mut queued = 0;
    let mut next = Some(first);
    while let Some(command) = next.take() {
        match command {
            WriterCommand::Write(w) => {
                queued += w.readings();
                group.writes.push(w);
            }
            WriterCommand::Close(done) => {
                group.close = Some(done);
                break;
            }
        }
        if queued < max_readings {
            next = commands.try_recv().ok();
        }
    }
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(usize);
    impl QueuedWrite for W {
        fn readings(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn a_group_takes_what_is_queued_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        for n in [2, 3, 4, 5] {
            tx.try_send(WriterCommand::Write(W(n))).ok().unwrap();
        }
        let first = rx.try_recv().unwrap();
        let group = take_group(first, &mut rx, 9);
        // 2 + 3 + 4 reaches 9: the 5 waits for the next group.
        let sizes: Vec<usize> = group.writes.iter().map(|w| w.0).collect();
        assert_eq!(sizes, [2, 3, 4]);
        assert!(group.close.is_none());
        let next = take_group(rx.try_recv().unwrap(), &mut rx, 9);
        assert_eq!(next.writes.len(), 1);
    }

    #[test]
    fn a_close_ends_the_group_and_what_follows_it_stays_queued() {
        let (tx, mut rx) = mpsc::channel(16);
        let (done, _answer) = oneshot::channel();
        tx.try_send(WriterCommand::Write(W(1))).ok().unwrap();
        tx.try_send(WriterCommand::Close(done)).ok().unwrap();
        tx.try_send(WriterCommand::Write(W(1))).ok().unwrap();
        let first = rx.try_recv().unwrap();
        let group = take_group(first, &mut rx, 100);
        assert_eq!(group.writes.len(), 1);
        assert!(group.close.is_some());
        assert!(matches!(rx.try_recv(), Ok(WriterCommand::Write(_))));
    }

    #[test]
    fn a_close_alone_is_a_group_without_writes() {
        let (_tx, mut rx) = mpsc::channel::<WriterCommand<W>>(1);
        let (done, _answer) = oneshot::channel();
        let group = take_group(WriterCommand::Close(done), &mut rx, 100);
        assert!(group.writes.is_empty());
        assert!(group.close.is_some());
    }
}
