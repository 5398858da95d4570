//! The ordering rules of a store actor, as plain data (no I/O, no actix), so they can
//! be tested on their own.
//!
//! - Operations on the same item (any of its names: live, soft-deleted, any level) run
//!   one after the other in arrival order, except that reads which arrive one after the
//!   other (with no write between them) run together: they see the same state, and that
//!   is what lets concurrent loads of one item become one backend call
//!   ([`crate::flow::coalesce`]). Operations on different items run concurrently.
//! - Exclusive operations (create, destroy, multi-item operations such as rename, gather
//!   and defrag, shutdown) wait until everything that arrived before them has finished,
//!   run alone, and everything that arrives after them waits for them.
//! - Free operations (stats, quota, list) neither wait nor block anything.
//!
//! Together this makes the operations on one store linearizable for every client, and
//! a client's pipelined requests on one item take effect in the order sent.

use std::collections::{HashMap, VecDeque};

/// What an operation needs to be ordered against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Access {
    /// Runs immediately, alongside anything.
    Free,
    /// Changes the item: ordered with every other operation on the same item key.
    Item(String),
    /// Only reads the item: runs together with reads of the same item that arrived
    /// right before it, after every earlier change of it.
    Read(String),
    /// Runs alone.
    Exclusive,
}

/// The scheduler: feed it arrivals and completions, it says which jobs start now.
#[derive(Debug)]
pub struct Scheduler<J> {
    /// Jobs running now (items and exclusives; free jobs are not counted).
    running: usize,
    exclusive_running: bool,
    /// Per busy item: what runs on it and the jobs that wait for it.
    items: HashMap<String, Busy<J>>,
    /// Jobs that arrived while an exclusive job waited or ran, in arrival order.
    backlog: VecDeque<(Access, J)>,
}

/// One busy item.
#[derive(Debug)]
struct Busy<J> {
    /// Reads running now (a change runs when this is 0 and `changing` is set).
    readers: usize,
    /// A change runs now.
    changing: bool,
    /// Jobs waiting for the item, in arrival order; `true` marks a read.
    waiting: VecDeque<(bool, J)>,
}

impl<J> Busy<J> {
    /// Start what waits at the front: one change, or every read up to the next change.
    fn start_next(&mut self, key: &str, start: &mut Vec<(Access, J)>) {
        while let Some((read, _)) = self.waiting.front() {
            let read = *read;
            if !read && self.readers > 0 {
                break;
            }
            let Some((_, job)) = self.waiting.pop_front() else { break };
            if read {
                self.readers += 1;
                start.push((Access::Read(key.to_string()), job));
            } else {
                self.changing = true;
                start.push((Access::Item(key.to_string()), job));
                break;
            }
        }
    }

    fn idle(&self) -> bool {
        self.readers == 0 && !self.changing && self.waiting.is_empty()
    }
}

impl<J> Default for Scheduler<J> {
    fn default() -> Self {
        Scheduler { running: 0, exclusive_running: false, items: HashMap::new(), backlog: VecDeque::new() }
    }
}

impl<J> Scheduler<J> {
    /// A job arrived; returns the jobs to start now (this one, or none).
    pub fn arrive(&mut self, access: Access, job: J) -> Vec<(Access, J)> {
        if access != Access::Free && (self.exclusive_running || !self.backlog.is_empty()) {
            self.backlog.push_back((access, job));
            return Vec::new();
        }
        let mut start = Vec::new();
        self.admit(access, job, &mut start);
        start
    }

    /// Admit a job that is not held back by an exclusive one.
    fn admit(&mut self, access: Access, job: J, start: &mut Vec<(Access, J)>) {
        match &access {
            Access::Free => start.push((access, job)),
            Access::Item(key) | Access::Read(key) => {
                let read = matches!(access, Access::Read(_));
                match self.items.get_mut(key) {
                    // Reads join reads that run, unless something waits before them.
                    Some(busy) if read && !busy.changing && busy.waiting.is_empty() => {
                        busy.readers += 1;
                        start.push((access, job));
                    }
                    Some(busy) => busy.waiting.push_back((read, job)),
                    None => {
                        let busy = Busy { readers: usize::from(read), changing: !read, waiting: VecDeque::new() };
                        self.items.insert(key.clone(), busy);
                        self.running += 1;
                        start.push((access, job));
                    }
                }
            }
            Access::Exclusive => {
                if self.running == 0 && self.items.is_empty() {
                    self.exclusive_running = true;
                    self.running += 1;
                    start.push((access, job));
                } else {
                    self.backlog.push_back((access, job));
                }
            }
        }
    }

    /// A started job finished; returns the jobs to start now.
    pub fn finish(&mut self, access: &Access) -> Vec<(Access, J)> {
        let mut start = Vec::new();
        match access {
            Access::Free => return start,
            Access::Item(key) | Access::Read(key) => {
                if let Some(busy) = self.items.get_mut(key) {
                    match access {
                        Access::Read(_) => busy.readers = busy.readers.saturating_sub(1),
                        _ => busy.changing = false,
                    }
                    if busy.readers == 0 && !busy.changing {
                        busy.start_next(key, &mut start);
                    }
                    if busy.idle() {
                        self.items.remove(key);
                        self.running = self.running.saturating_sub(1);
                    }
                }
            }
            Access::Exclusive => {
                self.exclusive_running = false;
                self.running = self.running.saturating_sub(1);
            }
        }
        // Let held-back jobs in, in order, until an exclusive one has to wait again.
        while !self.exclusive_running {
            let Some((a, _)) = self.backlog.front() else {
                break;
            };
            if *a == Access::Exclusive && !(self.running == 0 && self.items.is_empty()) {
                break;
            }
            let Some((a, job)) = self.backlog.pop_front() else {
                break;
            };
            self.admit(a, job, &mut start);
        }
        start
    }

    /// Nothing running and nothing waiting.
    pub fn is_idle(&self) -> bool {
        self.running == 0 && self.items.is_empty() && self.backlog.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(k: &str) -> Access {
        Access::Item(k.to_string())
    }

    fn read(k: &str) -> Access {
        Access::Read(k.to_string())
    }

    fn ids(v: Vec<(Access, u32)>) -> Vec<u32> {
        v.into_iter().map(|(_, j)| j).collect()
    }

    #[test]
    fn same_item_in_order_other_items_concurrently() {
        let mut s = Scheduler::default();
        assert_eq!(ids(s.arrive(item("a"), 1)), [1]);
        assert_eq!(ids(s.arrive(item("a"), 2)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(item("b"), 3)), [3]);
        assert_eq!(ids(s.arrive(Access::Free, 4)), [4]);
        assert_eq!(ids(s.finish(&item("a"))), [2]);
        assert_eq!(ids(s.finish(&item("b"))), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&item("a"))), Vec::<u32>::new());
        assert!(s.is_idle());
    }

    #[test]
    fn exclusive_waits_for_earlier_and_holds_back_later() {
        let mut s = Scheduler::default();
        assert_eq!(ids(s.arrive(item("a"), 1)), [1]);
        assert_eq!(ids(s.arrive(item("a"), 2)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(Access::Exclusive, 3)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(item("b"), 4)), Vec::<u32>::new(), "held back behind the exclusive");
        assert_eq!(ids(s.arrive(Access::Free, 5)), [5], "free jobs are never held");
        assert_eq!(ids(s.finish(&item("a"))), [2]);
        assert_eq!(ids(s.finish(&item("a"))), [3], "exclusive starts when all before it are done");
        assert_eq!(ids(s.arrive(item("c"), 6)), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&Access::Exclusive)), [4, 6]);
        assert_eq!(ids(s.finish(&item("b"))), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&item("c"))), Vec::<u32>::new());
        assert!(s.is_idle());
    }

    #[test]
    fn consecutive_exclusives_run_one_at_a_time() {
        let mut s = Scheduler::default();
        assert_eq!(ids(s.arrive(Access::Exclusive, 1)), [1]);
        assert_eq!(ids(s.arrive(Access::Exclusive, 2)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(item("x"), 3)), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&Access::Exclusive)), [2]);
        assert_eq!(ids(s.finish(&Access::Exclusive)), [3]);
        assert_eq!(ids(s.finish(&item("x"))), Vec::<u32>::new());
        assert!(s.is_idle());
    }

    #[test]
    fn reads_run_together_between_changes() {
        let mut s = Scheduler::default();
        assert_eq!(ids(s.arrive(read("a"), 1)), [1]);
        assert_eq!(ids(s.arrive(read("a"), 2)), [2], "a read joins a running read");
        assert_eq!(ids(s.arrive(item("a"), 3)), Vec::<u32>::new(), "a change waits for the reads");
        assert_eq!(ids(s.arrive(read("a"), 4)), Vec::<u32>::new(), "a read after a change waits for it");
        assert_eq!(ids(s.arrive(read("a"), 5)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(item("a"), 6)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(read("a"), 7)), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&read("a"))), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&read("a"))), [3]);
        assert_eq!(ids(s.finish(&item("a"))), [4, 5], "the reads up to the next change start together");
        assert_eq!(ids(s.finish(&read("a"))), Vec::<u32>::new());
        assert_eq!(ids(s.finish(&read("a"))), [6]);
        assert_eq!(ids(s.finish(&item("a"))), [7]);
        assert_eq!(ids(s.finish(&read("a"))), Vec::<u32>::new());
        assert!(s.is_idle());
    }

    #[test]
    fn reads_hold_back_an_exclusive_and_wait_for_it() {
        let mut s = Scheduler::default();
        assert_eq!(ids(s.arrive(read("a"), 1)), [1]);
        assert_eq!(ids(s.arrive(Access::Exclusive, 2)), Vec::<u32>::new());
        assert_eq!(ids(s.arrive(read("a"), 3)), Vec::<u32>::new(), "held back behind the exclusive");
        assert_eq!(ids(s.finish(&read("a"))), [2]);
        assert_eq!(ids(s.finish(&Access::Exclusive)), [3]);
        assert_eq!(ids(s.finish(&read("a"))), Vec::<u32>::new());
        assert!(s.is_idle());
    }
}
