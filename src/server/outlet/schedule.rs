//! The model test's scheduler (`model.rs`): it runs a few actors, each on
//! its own thread, one at a time, switching only at the points the outlet
//! marks (`interleave` in `outlet.rs`), and explores every order of
//! switches and every choice the model's socket makes ([`choose`]), depth
//! first, one execution after another, each replaying the choices of the
//! last up to the one it changes.
//!
//! Each point says what the code after it, up to the actor's next point,
//! touches of what the actors share ([`touch`]). Two such stretches that
//! touch nothing in common end the same in either order, so only one order
//! is explored (sleep sets, as in Godefroid's partial-order reduction): an
//! execution whose every runnable actor is asleep repeats one already
//! explored, and is cut off. Every other order of the points is explored.
//!
//! An actor that spins (`Outlet::take` waiting out a fan-out write) may not
//! run again until another actor has made progress, so a wait that could
//! never end is reported as a deadlock instead of spinning forever.
//!
//! The schedules are sequentially consistent: every access happens at once,
//! in the order of the schedule. What the atomics' orderings add is argued
//! where they are used.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

thread_local! {
    /// The execution this thread is an actor of, and its number.
    static ACTOR: RefCell<Option<(Arc<Execution>, usize)>> = const { RefCell::new(None) };
}

/// What a stretch of code touches of what the actors share: a set of
/// these bits. A read counts as a write.
pub(super) mod touch {
    /// `Outlet::state`.
    pub(crate) const STATE: u32 = 1;
    /// What the listener was sent (`Outlet::sent`).
    pub(crate) const SENT: u32 = 1 << 1;
    pub(crate) const GENERATION: u32 = 1 << 2;
    /// The rest of a frame cut short.
    pub(crate) const PARTIAL: u32 = 1 << 3;
    /// The fan-out's wake-up (`missed`, and the waker).
    pub(crate) const MISSED: u32 = 1 << 4;
    /// The socket, and what the owner queued for it.
    pub(crate) const SOCKET: u32 = 1 << 5;
    /// The station's view (the model's).
    pub(crate) const VIEW: u32 = 1 << 6;
    /// Anything: what an actor does before its first point.
    pub(super) const ALL: u32 = u32::MAX;
}

/// A point where another actor may run; what follows, up to this actor's
/// next point, touches `touches`. Nothing on a thread that is no actor
/// (every test but the model's).
pub(super) fn point(touches: u32) {
    if let Some((execution, me)) = current() {
        execution.switch(me, touches, false);
    }
}

/// As [`point`], for an actor that cannot go on until another has made
/// progress (and then goes to its next point).
pub(super) fn spin() {
    if let Some((execution, me)) = current() {
        execution.switch(me, 0, true);
    }
}

/// One of `options` outcomes (`0..options`): each is explored in turn.
/// Always 0 on a thread that is no actor.
pub(super) fn choose(options: usize) -> usize {
    current().map_or(0, |(execution, _)| execution.lock().path.pick(options))
}

fn current() -> Option<(Arc<Execution>, usize)> {
    ACTOR.with(|a| a.borrow().clone())
}

/// The choices of one execution: which option was taken of how many.
#[derive(Debug, Default)]
struct Path {
    steps: Vec<(usize, usize)>,
    /// The next step to take (or to add).
    at: usize,
}

impl Path {
    fn pick(&mut self, options: usize) -> usize {
        if options < 2 {
            return 0;
        }
        let choice = match self.steps.get(self.at) {
            Some(&(choice, n)) => {
                assert_eq!(n, options, "an execution did not replay the last");
                choice
            }
            None => {
                self.steps.push((0, options));
                0
            }
        };
        self.at += 1;
        choice
    }

    /// The next path not yet explored: the last choice that has another
    /// option takes it, and what came after it is chosen afresh. `false`
    /// when every path was explored.
    fn advance(&mut self) -> bool {
        self.at = 0;
        while let Some((choice, n)) = self.steps.pop() {
            if choice + 1 < n {
                self.steps.push((choice + 1, n));
                return true;
            }
        }
        false
    }
}

/// Whose turn it is, in one execution.
struct Turns {
    running: Option<usize>,
    finished: Vec<bool>,
    spinning: Vec<bool>,
    /// What each actor's next stretch touches.
    pending: Vec<u32>,
    /// Actors whose next stretch was explored first from an earlier point
    /// of this execution and has touched nothing since that was touched.
    asleep: Vec<bool>,
    path: Path,
    /// Points passed: bounded, so that an actor that loops without end is
    /// told instead of run forever.
    steps: usize,
    /// Why every actor stops early.
    stop: Option<Stop>,
}

enum Stop {
    /// A panic, a deadlock.
    Failure(String),
    /// Every runnable actor is asleep: this execution repeats another.
    Redundant,
}

struct Execution {
    turns: Mutex<Turns>,
    changed: Condvar,
}

/// Most points one execution passes.
const MAX_STEPS: usize = 10_000;

/// Unwinds an actor when another one failed.
struct Aborted;

impl Execution {
    fn new(actors: usize, path: Path) -> Self {
        Self {
            turns: Mutex::new(Turns {
                running: None,
                finished: vec![false; actors],
                spinning: vec![false; actors],
                pending: vec![touch::ALL; actors],
                asleep: vec![false; actors],
                path,
                steps: 0,
                stop: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chooses who runs next among the actors that can and are awake.
    fn pass(&self, turns: &mut Turns) {
        let runnable: Vec<usize> = (0..turns.finished.len())
            .filter(|&i| !turns.finished[i] && !turns.spinning[i])
            .collect();
        let awake: Vec<usize> = runnable
            .iter()
            .copied()
            .filter(|&i| !turns.asleep[i])
            .collect();
        turns.running = None;
        if runnable.is_empty() {
            if turns.finished.iter().any(|f| !f) {
                turns.stop.get_or_insert(Stop::Failure(
                    "deadlock: every actor waits on another".into(),
                ));
            }
        } else if awake.is_empty() {
            turns.stop.get_or_insert(Stop::Redundant);
        } else {
            let chosen = turns.path.pick(awake.len());
            let next = awake[chosen];
            // The actors explored before `next` from here sleep while what
            // runs touches nothing of theirs.
            for &earlier in &awake[..chosen] {
                turns.asleep[earlier] = true;
            }
            let touches = turns.pending[next];
            for i in 0..turns.asleep.len() {
                if turns.pending[i] & touches != 0 {
                    turns.asleep[i] = false;
                }
            }
            turns.running = Some(next);
        }
        self.changed.notify_all();
    }

    /// Waits until it is `me`'s turn.
    fn wait_turn(&self, mut turns: MutexGuard<'_, Turns>, me: usize) {
        while turns.running != Some(me) && turns.stop.is_none() {
            turns = self.changed.wait(turns).unwrap_or_else(|p| p.into_inner());
        }
        if turns.stop.is_some() {
            drop(turns);
            resume_unwind(Box::new(Aborted));
        }
    }

    /// `me` reached a point, and what follows touches `touches`;
    /// `spinning` when it cannot go on until another actor has made
    /// progress.
    fn switch(&self, me: usize, touches: u32, spinning: bool) {
        let mut turns = self.lock();
        turns.steps += 1;
        if turns.steps > MAX_STEPS {
            turns.stop.get_or_insert(Stop::Failure(format!(
                "over {MAX_STEPS} steps: an actor loops without end"
            )));
        }
        turns.pending[me] = touches;
        if spinning {
            turns.spinning[me] = true;
        } else {
            // `me` made progress: whoever waited on it may try again.
            turns.spinning.iter_mut().for_each(|s| *s = false);
        }
        self.pass(&mut turns);
        self.wait_turn(turns, me);
    }

    fn finish(&self, me: usize) {
        let mut turns = self.lock();
        turns.finished[me] = true;
        turns.pending[me] = 0;
        turns.spinning.iter_mut().for_each(|s| *s = false);
        self.pass(&mut turns);
    }

    fn fail(&self, why: String) {
        let mut turns = self.lock();
        turns.stop.get_or_insert(Stop::Failure(why));
        self.changed.notify_all();
    }
}

/// What a panic said.
fn message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_owned()
    }
}

/// Runs `actors` together on what `setup` makes, in every schedule, and
/// hands each execution's world to `check` once every actor is done
/// (`check` runs on this thread: no point of it switches). Panics with the
/// schedule when an actor or `check` fails; returns how many executions
/// ran to the end (each a different order of what the actors share).
pub(super) fn explore<W: Send + Sync>(
    setup: impl Fn() -> W,
    actors: &[&(dyn Fn(&W) + Sync)],
    check: impl Fn(&W) -> Result<(), String>,
) -> usize {
    let mut path = Path::default();
    let mut executions = 0;
    std::thread::scope(|scope| {
        let (done_tx, done) = mpsc::channel::<()>();
        let mut jobs = Vec::new();
        for (me, actor) in actors.iter().copied().enumerate() {
            let (tx, rx) = mpsc::channel::<(Arc<Execution>, Arc<W>)>();
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                for (execution, world) in rx {
                    ACTOR.with(|a| *a.borrow_mut() = Some((execution.clone(), me)));
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        execution.wait_turn(execution.lock(), me);
                        actor(&world);
                    }));
                    ACTOR.with(|a| *a.borrow_mut() = None);
                    match run {
                        Ok(()) => execution.finish(me),
                        Err(panic) if panic.is::<Aborted>() => {}
                        Err(panic) => execution.fail(message(&*panic)),
                    }
                    drop(world);
                    if done_tx.send(()).is_err() {
                        return;
                    }
                }
            });
            jobs.push(tx);
        }
        loop {
            let world = Arc::new(setup());
            let execution = Arc::new(Execution::new(actors.len(), std::mem::take(&mut path)));
            execution.pass(&mut execution.lock());
            for job in &jobs {
                job.send((execution.clone(), world.clone()))
                    .expect("an actor thread is gone");
            }
            for _ in actors {
                done.recv().expect("an actor thread is gone");
            }
            let stop = {
                let mut turns = execution.lock();
                path = std::mem::take(&mut turns.path);
                turns.stop.take()
            };
            let outcome = match stop {
                None => {
                    executions += 1;
                    check(&world)
                }
                Some(Stop::Redundant) => Ok(()),
                Some(Stop::Failure(why)) => Err(why),
            };
            if let Err(why) = outcome {
                panic!("{why}\nin the schedule {:?}", path.steps);
            }
            if !path.advance() {
                break;
            }
        }
    });
    executions
}
