//! The outlet's state machine, checked in every interleaving of its two
//! writers.
//!
//! A fan-out shard and a connection's task (the owner) each run a few
//! operations against one [`Outlet`] over a model socket ([`Wire`]): the
//! shard publishes views and delivers them, the owner answers a request,
//! catches up, tunes out or says goodbye, as `connection/` does. The
//! scheduler (`schedule.rs`) runs them in every order the outlet's points
//! allow, and lets each of the shard's non-blocking writes take everything,
//! nothing, one byte, or up to a frame's end. After each execution the
//! listener's bytes must be:
//!
//! - whole frames, never interleaved: so a cut-short write's rest came
//!   before anything else;
//! - no frame twice, and states in `seq` order, each after the notice that
//!   its station is live;
//! - ending with the newest view (its notice and state): no state lost;
//!
//! and the fan-out must never have written while the owner had frames
//! queued (tungstenite's buffer), nor written to a TLS outlet, nor after
//! the owner tuned out or said goodbye.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::schedule::touch::{SOCKET, STATE, VIEW};
use super::schedule::{self, explore};
use super::{Frames, Outlet, Sent, Socket};

/// A station's view as the model publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    live: bool,
    /// The newest state's `seq`.
    newest: Option<u64>,
}

const OFFLINE: View = View {
    live: false,
    newest: None,
};

const fn live(seq: u64) -> View {
    View {
        live: true,
        newest: Some(seq),
    }
}

/// The station goes live with a state, then publishes another.
const TWO_STATES: &[View] = &[live(1), live(2)];

/// The station goes live with a state, then offline.
const LIVE_THEN_OFFLINE: &[View] = &[live(1), OFFLINE];

/// The frames, short and each told apart from the others: `<on>`, `<off>`,
/// `<s1>` (a state), `<r>` (a reply), `<out>` (`tuned_out`), `<bye>` (the
/// close frame).
fn notice(live: bool) -> Vec<u8> {
    if live {
        b"<on>".to_vec()
    } else {
        b"<off>".to_vec()
    }
}

fn state(seq: u64) -> Vec<u8> {
    format!("<s{seq}>").into_bytes()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The model's socket: the bytes the listener receives.
#[derive(Default)]
struct Wire {
    bytes: Mutex<Vec<u8>>,
    /// Bytes the owner has queued and not yet written: tungstenite's buffer.
    queued: AtomicUsize,
    fanout_writes: AtomicUsize,
}

impl Socket for Wire {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fanout_write(&[buf])
    }

    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let bufs: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.fanout_write(&bufs)
    }
}

impl Wire {
    /// The fan-out's non-blocking write: it takes everything, nothing (the
    /// socket would block), one byte, or up to the first frame's end.
    fn fanout_write(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        assert_eq!(
            self.queued.load(Ordering::SeqCst),
            0,
            "the fan-out wrote while the owner had frames queued"
        );
        self.fanout_writes.fetch_add(1, Ordering::SeqCst);
        let all = bufs.concat();
        let mut takes = vec![all.len(), 0, 1];
        if let [first, _] = bufs {
            takes.push(first.len());
        }
        takes.retain(|&n| n <= all.len());
        takes.dedup();
        let n = takes[schedule::choose(takes.len())];
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        lock(&self.bytes).extend_from_slice(&all[..n]);
        Ok(n)
    }

    /// The owner writes a frame it queued, whole, as tungstenite does.
    /// How many writes that takes, and what the fan-out does between them,
    /// does not matter: the fan-out may not write while anything is queued,
    /// which [`Wire::fanout_write`] checks.
    fn owner_write(&self, outlet: &Outlet<Wire>, frame: &[u8]) {
        self.owner_write_now(outlet, frame);
        self.queued.fetch_sub(frame.len(), Ordering::SeqCst);
    }

    /// The owner writes bytes it did not queue: the rest of a frame cut
    /// short, its close frame.
    fn owner_write_now(&self, outlet: &Outlet<Wire>, bytes: &[u8]) {
        schedule::point(SOCKET | STATE);
        assert!(
            outlet.owner_holds(),
            "the owner wrote without holding its outlet"
        );
        lock(&self.bytes).extend_from_slice(bytes);
    }
}

/// The connection's task, as the model runs it.
#[derive(Default)]
struct Owner {
    /// It holds the outlet (`Conn::hold`).
    holding: bool,
    /// A cut-short frame's rest awaits it.
    handed_off: bool,
    /// Tuned to the station, attached to its fan-out.
    tuned: bool,
    /// Said goodbye: the task has ended.
    closed: bool,
    /// Frames queued for its next flush.
    out: Vec<Vec<u8>>,
}

/// One execution's world: an outlet tuned to a station that was offline.
struct World {
    outlet: Arc<Outlet<Wire>>,
    /// The station's cell: its newest view.
    view: Mutex<View>,
    /// The views the station publishes, in order.
    views: &'static [View],
    /// The fan-out shard's generation for the outlet.
    generation: u64,
    owner: Mutex<Owner>,
}

impl World {
    fn new(tls: bool, views: &'static [View]) -> Self {
        let outlet = Outlet::with(Wire::default(), tls);
        // Tuning in, as `Conn::tune_in` does: held, nothing sent yet.
        outlet.take();
        outlet.set_sent(Sent::default());
        let generation = outlet.attach();
        outlet.give_back();
        Self {
            outlet,
            view: Mutex::new(OFFLINE),
            views,
            generation,
            owner: Mutex::new(Owner {
                tuned: true,
                ..Owner::default()
            }),
        }
    }

    fn wire(&self) -> &Wire {
        self.outlet.stream()
    }

    // --- the fan-out shard ---

    /// The station publishes each view and the shard delivers it.
    fn fan_out(&self) {
        for view in self.views {
            schedule::point(VIEW);
            *lock(&self.view) = *view;
            let notice = notice(view.live);
            let sync = view.newest.map(state);
            let frames = Frames {
                mark: u64::from(view.live),
                notice: &notice,
                newest: view.newest.zip(sync.as_deref()),
            };
            self.outlet.deliver(self.generation, &frames);
        }
    }

    // --- the owner, as `connection/` does it ---

    /// `Conn::hold`: takes the outlet before queueing anything.
    fn hold(&self, o: &mut Owner) {
        if !o.holding {
            o.handed_off |= self.outlet.take();
            o.holding = true;
        }
    }

    /// `Conn::push`.
    fn queue(&self, o: &mut Owner, frame: Vec<u8>) {
        self.hold(o);
        schedule::point(SOCKET);
        self.wire().queued.fetch_add(frame.len(), Ordering::SeqCst);
        o.out.push(frame);
    }

    /// `Conn::flush`: the rest of a cut-short frame, then what the listener
    /// lacks (`Conn::catch_up`), then the queue; gives the outlet back.
    fn flush(&self, o: &mut Owner) {
        if std::mem::take(&mut o.handed_off) {
            if let Some(rest) = self.outlet.handed_over() {
                self.wire().owner_write_now(&self.outlet, &rest);
            }
        }
        if o.tuned {
            schedule::point(VIEW);
            let view = *lock(&self.view);
            let newest = view.newest.map(|seq| (seq, seq));
            if let Some(lack) = self.outlet.sent().lacks(u64::from(view.live), newest) {
                if lack.notice {
                    self.queue(o, notice(view.live));
                }
                if let Some(seq) = lack.sync {
                    self.queue(o, state(seq));
                }
                self.outlet.set_sent(lack.then);
            }
        }
        for frame in std::mem::take(&mut o.out) {
            self.wire().owner_write(&self.outlet, &frame);
        }
        o.holding = false;
        self.outlet.give_back();
    }

    /// Answers a request, then catches up if the fan-out skipped it
    /// meanwhile (`Conn::serve`'s loop).
    fn answer(&self) {
        let mut o = lock(&self.owner);
        self.queue(&mut o, b"<r>".to_vec());
        self.flush(&mut o);
        if self.outlet.was_skipped() {
            self.hold(&mut o);
            self.flush(&mut o);
        }
    }

    /// `tune_out`: held first, detached, answered.
    fn tune_out(&self) {
        let mut o = lock(&self.owner);
        self.hold(&mut o);
        self.outlet.detach();
        o.tuned = false;
        self.queue(&mut o, b"<out>".to_vec());
        self.flush(&mut o);
    }

    /// `Conn::finish`: closes the outlet, lets go of the station, writes
    /// the rest of a cut-short frame and the close frame.
    fn goodbye(&self) {
        let mut o = lock(&self.owner);
        o.handed_off |= self.outlet.close();
        self.outlet.detach();
        o.tuned = false;
        o.closed = true;
        if std::mem::take(&mut o.handed_off) {
            if let Some(rest) = self.outlet.handed_over() {
                self.wire().owner_write_now(&self.outlet, &rest);
            }
        }
        self.wire().owner_write_now(&self.outlet, b"<bye>");
    }

    /// After the schedule: the owner catches up as long as it is woken.
    fn settle(&self) {
        let mut o = lock(&self.owner);
        while !o.closed && self.outlet.was_skipped() {
            self.hold(&mut o);
            self.flush(&mut o);
        }
    }
}

/// What the listener heard.
#[derive(Debug, Default)]
struct Heard {
    live: bool,
    seq: u64,
    replies: usize,
    /// `<out>` or `<bye>`: nothing may follow.
    last: Option<String>,
}

/// Reads the listener's bytes frame by frame, checking each.
fn listen(bytes: &[u8]) -> Result<Heard, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut heard = Heard::default();
    let mut rest = &text[..];
    while !rest.is_empty() {
        let at = rest;
        let torn = || format!("a torn or interleaved frame at {at:?} in {text:?}");
        let body = rest.strip_prefix('<').ok_or_else(torn)?;
        let end = body.find('>').ok_or_else(torn)?;
        let frame = &body[..end];
        if frame.contains('<') {
            return Err(torn());
        }
        rest = &body[end + 1..];
        if let Some(last) = &heard.last {
            return Err(format!("<{frame}> after <{last}> in {text:?}"));
        }
        match frame {
            "on" | "off" if heard.live == (frame == "on") => {
                return Err(format!("<{frame}> twice in {text:?}"));
            }
            "on" | "off" => heard.live = frame == "on",
            "r" => heard.replies += 1,
            "out" | "bye" => heard.last = Some(frame.to_owned()),
            _ => {
                let seq: u64 = frame
                    .strip_prefix('s')
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(torn)?;
                if !heard.live {
                    return Err(format!("<s{seq}> while offline in {text:?}"));
                }
                if seq <= heard.seq {
                    return Err(format!("<s{seq}> after <s{}> in {text:?}", heard.seq));
                }
                heard.seq = seq;
            }
        }
    }
    Ok(heard)
}

/// What an execution must end with, beyond [`listen`]'s checks.
struct Expect {
    replies: usize,
    last: Option<&'static str>,
}

fn check(world: &World, expect: &Expect) -> Result<(), String> {
    let state = world.outlet.state.load(Ordering::SeqCst);
    if state == super::FANOUT {
        return Err("the fan-out kept the outlet".into());
    }
    world.settle();
    let wire = world.wire();
    let bytes = lock(&wire.bytes).clone();
    let heard = listen(&bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    if heard.replies != expect.replies {
        return Err(format!("{} replies in {text:?}", heard.replies));
    }
    if heard.last.as_deref() != expect.last {
        return Err(format!("{:?} last in {text:?}", heard.last));
    }
    let sent = Sent {
        seq: heard.seq,
        told: u64::from(heard.live),
    };
    if world.outlet.sent() != sent {
        return Err(format!(
            "the outlet says {:?} was sent, the listener heard {text:?}",
            world.outlet.sent()
        ));
    }
    if expect.last.is_none() {
        // Still tuned: it has the newest view.
        let view = *lock(&world.view);
        if heard.live != view.live || view.newest.is_some_and(|seq| seq != heard.seq) {
            return Err(format!("{text:?} does not end with {view:?}"));
        }
    }
    if world.outlet.tls && wire.fanout_writes.load(Ordering::SeqCst) > 0 {
        return Err("the fan-out wrote to a TLS outlet".into());
    }
    let state = world.outlet.state.load(Ordering::SeqCst);
    let settled = if expect.last == Some("bye") {
        super::CLOSED
    } else {
        super::IDLE
    };
    if wire.queued.load(Ordering::SeqCst) != 0 || state != settled {
        return Err(format!("the outlet was left in state {state}"));
    }
    Ok(())
}

/// Explores every schedule of the fan-out delivering `views` while the
/// owner runs `owner`.
fn every_schedule(tls: bool, views: &'static [View], owner: fn(&World), expect: Expect) -> usize {
    let fan_out = |w: &World| w.fan_out();
    let owner = move |w: &World| owner(w);
    let executions = explore(
        || World::new(tls, views),
        &[&fan_out, &owner],
        |w| check(w, &expect),
    );
    eprintln!("{executions} executions");
    executions
}

#[test]
fn a_reply_and_two_states() {
    let n = every_schedule(
        false,
        TWO_STATES,
        World::answer,
        Expect {
            replies: 1,
            last: None,
        },
    );
    assert!(n > 1_000, "{n} executions");
}

#[test]
fn a_reply_while_the_station_goes_offline() {
    every_schedule(
        false,
        LIVE_THEN_OFFLINE,
        World::answer,
        Expect {
            replies: 1,
            last: None,
        },
    );
}

#[test]
fn tuning_out_while_states_arrive() {
    every_schedule(
        false,
        TWO_STATES,
        World::tune_out,
        Expect {
            replies: 0,
            last: Some("out"),
        },
    );
}

#[test]
fn a_goodbye_while_states_arrive() {
    every_schedule(
        false,
        TWO_STATES,
        World::goodbye,
        Expect {
            replies: 0,
            last: Some("bye"),
        },
    );
}

#[test]
fn a_tls_outlet_is_written_by_its_owner_alone() {
    every_schedule(
        true,
        TWO_STATES,
        World::answer,
        Expect {
            replies: 1,
            last: None,
        },
    );
}
