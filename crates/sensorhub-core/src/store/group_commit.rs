//! The queue in front of an engine's writer, and how the writer takes a
//! group from it: the first command it waits for, then whatever else is
//! already queued, up to a number of readings. One group is one commit.
//!
//! Why here: both engines batch concurrent calls into one transaction the
//! same way (the embedded writer on a thread, the PostgreSQL writer on a
//! task), and the rules (a `Close` ends the group and is answered after
//! it; a group holds at most the limit's worth) must not drift apart.
//! Whether to wait for more before committing is the engine's decision:
//! it may [`top_up`] a group after waiting.
//!
//! Invariant: a group holds no command queued after a `Close`, and taking
//! or topping one up never waits once the first command is in.

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

impl<W: QueuedWrite> Group<W> {
    /// How many readings the group's writes hold.
    pub fn readings(&self) -> usize {
        self.writes.iter().map(QueuedWrite::readings).sum()
    }
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
    fill(&mut group, Some(first), commands, max_readings);
    group
}

/// Adds to `group` the writes queued since it was taken, up to
/// `max_readings` readings in all or a `Close`; returns how many writes it
/// added. A group a `Close` ended takes nothing more.
pub fn top_up<W: QueuedWrite>(
    group: &mut Group<W>,
    commands: &mut mpsc::Receiver<WriterCommand<W>>,
    max_readings: usize,
) -> usize {
    if group.close.is_some() || group.readings() >= max_readings {
        return 0;
    }
    let before = group.writes.len();
    let next = commands.try_recv().ok();
    fill(group, next, commands, max_readings);
    group.writes.len() - before
}

/// Takes `next` and what is queued behind it into `group` until the limit
/// or a `Close`.
fn fill<W: QueuedWrite>(
    group: &mut Group<W>,
    mut next: Option<WriterCommand<W>>,
    commands: &mut mpsc::Receiver<WriterCommand<W>>,
    max_readings: usize,
) {
    let mut queued = group.readings();
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

    #[test]
    fn topping_up_takes_what_queued_since_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.try_send(WriterCommand::Write(W(2))).ok().unwrap();
        let first = rx.try_recv().unwrap();
        let mut group = take_group(first, &mut rx, 6);
        assert_eq!(group.writes.len(), 1);
        // Nothing queued yet: nothing added, and no wait.
        assert_eq!(top_up(&mut group, &mut rx, 6), 0);
        for n in [1, 3, 1] {
            tx.try_send(WriterCommand::Write(W(n))).ok().unwrap();
        }
        // 2 + 1 + 3 reaches 6: the last 1 waits for the next group.
        assert_eq!(top_up(&mut group, &mut rx, 6), 2);
        assert_eq!(group.readings(), 6);
        assert_eq!(top_up(&mut group, &mut rx, 6), 0);
        assert!(matches!(rx.try_recv(), Ok(WriterCommand::Write(W(1)))));
    }

    #[test]
    fn topping_up_stops_at_a_close_and_a_closed_group_takes_nothing() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.try_send(WriterCommand::Write(W(1))).ok().unwrap();
        let first = rx.try_recv().unwrap();
        let mut group = take_group(first, &mut rx, 100);
        let (done, _answer) = oneshot::channel();
        tx.try_send(WriterCommand::Write(W(1))).ok().unwrap();
        tx.try_send(WriterCommand::Close(done)).ok().unwrap();
        tx.try_send(WriterCommand::Write(W(1))).ok().unwrap();
        assert_eq!(top_up(&mut group, &mut rx, 100), 1);
        assert!(group.close.is_some());
        assert_eq!(top_up(&mut group, &mut rx, 100), 0);
        assert!(matches!(rx.try_recv(), Ok(WriterCommand::Write(_))));
    }
}
