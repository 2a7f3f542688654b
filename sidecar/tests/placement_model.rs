//! A state-space model check of online placement changes (docs/placement-changes.md): a store
//! moves from layout C to layout T through the records "preparing" (g1), "copying" (g2),
//! "switching" (g3) and "stable on T" (g4) while two sidecars serve, every memcached step of every operation, of the
//! driver and of its copier interleaved in every possible order, explored exhaustively (depth
//! first, with a set of visited states).
//!
//! It models the protocol, not the code: no memcached, nothing of the sidecar's crate. Three
//! servers (a, b, c), three keys whose owners under C and under T are fixed tables (consistent
//! with one rendezvous order per key), each key either an immutable item (blob-like: set on every
//! write owner, deleted with a tombstone) or a compare-and-swap item (root-record-like: a version
//! and a commit id, CAS on the view's primary, then converged by version to the other write
//! owners). The driver writes each record server by server, waits for every sidecar's report,
//! copies item by item (read the source, later `add` or converge on T's owners), cleans up, and
//! may crash anywhere and be resumed from the highest record. Sidecars take the highest record
//! they read, start new operations under it, report once their older operations drained.
//!
//! Checked in every reachable state, under every view in use (each live sidecar's, each in-flight
//! operation's):
//! 1. an acknowledged put whose key was not deleted is readable;
//! 2. the CAS item reads as a commit descending from every acknowledged commit (so acknowledged
//!    commits form one chain and none is lost);
//! 3. an item whose delete was acknowledged reads as absent;
//! 4. no two views in use are two generations apart.
//!
//! Every get operation also checks its own answer against what was acknowledged when it started,
//! and a state with no successor must be a finished one (nothing waits forever).
//!
//! Each check is shown to fail when one rule of the protocol is taken out (`Rules`): a check
//! that cannot fail proves nothing. `ZMM_MODEL_FULL=1` also runs bigger configurations (all
//! failures at once, longer workloads) that take minutes in a debug build.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

// ---------------------------------------------------------------------------------------------
// Sizes and names

const SERVERS: usize = 3;
const KEYS: usize = 3;
const SIDECARS: usize = 2;
const MAX_OPS: usize = 8;
/// Ids of values: 1..=KEYS are the values a key holds before the change, `FIRST_OP_ID + i`
/// the value written by operation i. Below 16 so that sets of ids fit a `u16`.
const FIRST_OP_ID: u8 = 4;
/// Times an operation that met a conflict (frozen CAS, stale token) starts over.
const MAX_RETRIES: u8 = 1;
const NAMES: [char; SERVERS] = ['a', 'b', 'c'];

/// What a generation of the record says. The store is stable on C (generation 0) before the
/// change; `Preparing` is the step this model showed to be needed before copying (finding 1,
/// below), which the sidecar now takes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Stage {
    StableC,
    /// Reads, puts and CAS by C; deletes (and touches) already on owners(C) and owners(T).
    Preparing,
    Copying,
    Switching,
    StableT,
}

type Mask = u8;
/// Owners of each key under one layout, primary first.
type OwnerTable = [Vec<usize>; KEYS];
/// A layout: its servers and its replication factor.
type Layout = (Mask, usize);
/// A frame of the depth-first search: a state, its successors, the next one to visit.
type Frame = (State, Vec<(Action, State)>, usize);

fn bit(server: usize) -> Mask {
    1 << server
}

fn mask(servers: &[usize]) -> Mask {
    servers.iter().fold(0, |m, s| m | bit(*s))
}

fn members(m: Mask) -> impl Iterator<Item = usize> {
    (0..SERVERS).filter(move |s| m & bit(*s) != 0)
}

// ---------------------------------------------------------------------------------------------
// Memcached servers

/// One key's item on one server. Versions matter for CAS items only (immutable items are
/// written at version 0 and never replaced).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
enum Cell {
    #[default]
    Empty,
    Val {
        ver: u8,
        id: u8,
    },
    /// Left by a delete: `add` fails over it, reads take it for "deleted".
    Tomb,
}

/// A memcached CAS token: memcached's value (here a per-item counter of writes) under the
/// server's name and incarnation, so that it passes nowhere else and not after a restart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Token {
    server: u8,
    incarnation: u8,
    stamp: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
struct Server {
    cells: [Cell; KEYS],
    /// Bumped by every write of the key: a token of an older stamp fails.
    stamps: [u8; KEYS],
    /// The generation of the placement record it holds (a restart loses it: 0).
    record: u8,
    incarnation: u8,
    /// Restarted empty: written to but neither read nor a primary until refilled (the refill
    /// is not modelled, so it stays so).
    catching_up: bool,
}

impl Server {
    fn set(&mut self, key: usize, cell: Cell) {
        self.cells[key] = cell;
        self.stamps[key] = self.stamps[key].wrapping_add(1);
    }

    fn add(&mut self, key: usize, cell: Cell) -> bool {
        let empty = self.cells[key] == Cell::Empty;
        if empty {
            self.set(key, cell);
        }
        empty
    }

    fn token(&self, server: usize, key: usize) -> Token {
        Token {
            server: server as u8,
            incarnation: self.incarnation,
            stamp: self.stamps[key],
        }
    }

    /// memcached's `cas`: stored only if the item is unchanged since the token was read here.
    fn cas(&mut self, server: usize, key: usize, token: Token, cell: Cell) -> bool {
        let ok = token == self.token(server, key) && self.cells[key] != Cell::Empty;
        if ok {
            self.set(key, cell);
        }
        ok
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration: layouts, workload, rules

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Immutable,
    Cas,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum OpKind {
    Put,
    Delete,
    Get,
    /// gets (token) then cas, as the ordered store commits a root record.
    Commit,
    /// add on the primary, then on the other write owners.
    Create,
}

#[derive(Clone, Copy, Debug)]
struct OpSpec {
    kind: OpKind,
    key: usize,
    sidecar: usize,
    /// Starts only once this operation was acknowledged (a delete after its put).
    after: Option<usize>,
}

const fn op(kind: OpKind, key: usize, sidecar: usize, after: Option<usize>) -> OpSpec {
    OpSpec {
        kind,
        key,
        sidecar,
        after,
    }
}

/// The protocol's rules; the default is the protocol as written. Each flag but the last takes
/// a rule out, to show that the checks catch what it prevents.
#[derive(Clone, Copy, Debug, Default)]
struct Rules {
    /// Switching sidecars CAS on primary(T) even where it differs from primary(C).
    no_freeze: bool,
    /// Copying sidecars already read from owners(T).
    read_t_in_copying: bool,
    /// The driver writes the next record without waiting for the reports.
    skip_report_wait: bool,
    /// Deletes leave no tombstone.
    no_tombstones: bool,
    /// Copying sidecars write to owners(C) only.
    write_c_only_in_copying: bool,
    /// Proposed fix 1: a first generation `Preparing` in which deletes already go to owners(T)
    /// while puts do not, so that no sidecar deletes on C alone once puts reach T.
    prepare: bool,
    /// Proposed fix 2: once every sidecar reports switching, the driver copies again, by
    /// version, every CAS item whose primary changes from owners(C) to owners(T).
    final_cas_copy: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    driver_crashes: u8,
    sidecar_crashes: u8,
    /// Servers restarted empty (only where every layout keeps two copies).
    restarts: u8,
}

#[derive(Clone, Debug)]
struct Config {
    name: &'static str,
    /// Owners of each key, primary first.
    c: [&'static [usize]; KEYS],
    t: [&'static [usize]; KEYS],
    kinds: [Kind; KEYS],
    /// Whether the key holds its initial value (id key+1, version 1) on owners(C).
    initial: [bool; KEYS],
    ops: Vec<OpSpec>,
    rules: Rules,
    faults: Faults,
}

/// Rendezvous orders over {a, b, c}: k0 and k1 [c, a, b], k2 [b, c, a]. So under C = {a, b}
/// k0 and k1 move their primary from a to c, and k2 keeps b.
const ORDER: [[usize; 3]; KEYS] = [[2, 0, 1], [2, 0, 1], [1, 2, 0]];

fn owners_r(servers: Mask, factor: usize) -> [&'static [usize]; KEYS] {
    // Leak-free static tables: every (order, servers, factor) combination used is listed here.
    static TABLES: std::sync::OnceLock<Vec<(Mask, usize, OwnerTable)>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let mut tables = Vec::new();
        for servers in [0b011u8, 0b111] {
            for factor in [1, 2] {
                let owners = ORDER.map(|order| {
                    order
                        .iter()
                        .copied()
                        .filter(|s| servers & bit(*s) != 0)
                        .take(factor)
                        .collect::<Vec<usize>>()
                });
                tables.push((servers, factor, owners));
            }
        }
        tables
    });
    let (_, _, owners) = tables
        .iter()
        .find(|(m, f, _)| *m == servers && *f == factor)
        .expect("a listed layout");
    [&owners[0][..], &owners[1][..], &owners[2][..]]
}

/// A change from (servers, factor) to (servers, factor) with the given workload.
fn config(
    name: &'static str,
    from: (Mask, usize),
    to: (Mask, usize),
    workload: &Workload,
    rules: Rules,
    faults: Faults,
) -> Config {
    Config {
        name,
        c: owners_r(from.0, from.1),
        t: owners_r(to.0, to.1),
        kinds: workload.kinds,
        initial: workload.initial,
        ops: workload.ops.to_vec(),
        rules,
        faults,
    }
}

struct Workload {
    kinds: [Kind; KEYS],
    initial: [bool; KEYS],
    ops: &'static [OpSpec],
}

use OpKind::{Commit, Create, Delete, Get, Put};

/// Immutable items: k0 (primary moves) put, read, deleted; k2 (primary stays) there before
/// the change, deleted and read.
const IMMUTABLE: Workload = Workload {
    kinds: [Kind::Immutable, Kind::Cas, Kind::Immutable],
    initial: [false, false, true],
    ops: &[
        op(Put, 0, 0, None),
        op(Get, 0, 1, None),
        op(Delete, 0, 1, Some(0)),
        op(Get, 0, 0, Some(2)),
        op(Delete, 2, 0, None),
        op(Get, 2, 1, None),
    ],
};

/// A CAS item whose primary moves (k1): two sidecars commit over it and read it.
const CAS_MOVING: Workload = Workload {
    kinds: [Kind::Immutable, Kind::Cas, Kind::Cas],
    initial: [false, true, false],
    ops: &[
        op(Commit, 1, 0, None),
        op(Commit, 1, 1, None),
        op(Get, 1, 0, None),
    ],
};

/// A CAS item whose primary stays (k2) and one created during the change (k1).
const CAS_STAYING_AND_CREATED: Workload = Workload {
    kinds: [Kind::Immutable, Kind::Cas, Kind::Cas],
    initial: [false, false, true],
    ops: &[
        op(Commit, 2, 0, None),
        op(Commit, 2, 1, None),
        op(Create, 1, 0, None),
        op(Get, 1, 1, None),
    ],
};

/// The finding: one commit whose writer dies mid-way, one commit later, one read.
const CAS_CRASHED_WRITER: Workload = Workload {
    kinds: [Kind::Immutable, Kind::Cas, Kind::Cas],
    initial: [false, true, false],
    ops: &[
        op(Commit, 1, 0, None),
        op(Commit, 1, 1, None),
        op(Get, 1, 1, None),
    ],
};

/// Everything at once (ZMM_MODEL_FULL).
const MIXED: Workload = Workload {
    kinds: [Kind::Immutable, Kind::Cas, Kind::Immutable],
    initial: [false, true, true],
    ops: &[
        op(Put, 0, 0, None),
        op(Delete, 0, 1, Some(0)),
        op(Get, 0, 1, None),
        op(Commit, 1, 0, None),
        op(Commit, 1, 1, None),
        op(Get, 1, 0, None),
        op(Delete, 2, 1, None),
        op(Get, 2, 0, None),
    ],
};

const AB: Mask = 0b011;
const ABC: Mask = 0b111;

impl Config {
    /// The stage a generation names: 1 is the first of the change.
    fn stage(&self, generation: u8) -> Stage {
        let stages: &[Stage] = if self.rules.prepare {
            &[
                Stage::StableC,
                Stage::Preparing,
                Stage::Copying,
                Stage::Switching,
                Stage::StableT,
            ]
        } else {
            &[
                Stage::StableC,
                Stage::Copying,
                Stage::Switching,
                Stage::StableT,
            ]
        };
        stages[usize::from(generation)]
    }

    fn generation(&self, stage: Stage) -> u8 {
        (0..=self.last_generation())
            .find(|g| self.stage(*g) == stage)
            .expect("a stage of this change")
    }

    fn last_generation(&self) -> u8 {
        if self.rules.prepare { 4 } else { 3 }
    }

    fn read_owners(&self, generation: u8, key: usize) -> &'static [usize] {
        let stage = self.stage(generation);
        let on_t =
            stage >= Stage::Switching || (stage == Stage::Copying && self.rules.read_t_in_copying);
        if on_t { self.t[key] } else { self.c[key] }
    }

    /// Where a write goes; `removal`: a delete (or a touch, which the model leaves out).
    fn write_owners(&self, generation: u8, key: usize, removal: bool) -> Mask {
        let (c, t) = (mask(self.c[key]), mask(self.t[key]));
        match self.stage(generation) {
            Stage::StableC => c,
            Stage::Preparing if removal => c | t,
            Stage::Preparing => c,
            Stage::Copying if self.rules.write_c_only_in_copying => c,
            Stage::Copying | Stage::Switching => c | t,
            Stage::StableT => t,
        }
    }

    /// Where a view serializes CAS and create; None: frozen (switching, primaries differ).
    fn cas_primary(&self, generation: u8, key: usize, down: Mask) -> Option<usize> {
        let first = |owners: &[usize]| owners.iter().copied().find(|s| down & bit(*s) == 0);
        let (pc, pt) = (first(self.c[key])?, first(self.t[key])?);
        match self.stage(generation) {
            Stage::StableC | Stage::Preparing | Stage::Copying => Some(pc),
            Stage::Switching if pc == pt || self.rules.no_freeze => Some(pt),
            Stage::Switching => None,
            Stage::StableT => Some(pt),
        }
    }

    fn op_id(i: usize) -> u8 {
        FIRST_OP_ID + i as u8
    }

    fn key_of_id(&self, id: u8) -> usize {
        if id < FIRST_OP_ID {
            usize::from(id - 1)
        } else {
            self.ops[usize::from(id - FIRST_OP_ID)].key
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model state

/// Copying one item to a set of servers by version: gets, then add (missing) or cas (older),
/// starting over on a failed add or cas; a newer version or a tombstone there stays.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Converge {
    left: Mask,
    at: Option<(u8, ConvStep)>,
    ver: u8,
    id: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum ConvStep {
    Gets,
    Add,
    Cas(Token),
}

/// What a get must answer, from what was acknowledged when it started.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Expect {
    Any,
    Value(u8),
    Absent,
    /// A commit descending from every one of these acknowledged commits.
    Descends(u16),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Phase {
    /// Servers still to `set`.
    Put { left: Mask },
    /// Servers still to delete from, then to tombstone.
    Delete { del: Mask, tomb: Mask },
    /// Reading the owners in order; `found` then repaired with `add` on those that missed.
    Get {
        next: u8,
        missed: Mask,
        found: Cell,
        repair: Mask,
        expect: Expect,
    },
    /// A commit about to read its token (gets) from the view's read primary.
    Token,
    /// The primary missed: the newest other copy goes back first (`add`).
    Restore { server: u8, cell: Cell },
    /// A commit holding its token, about to cas on the view's primary.
    Cas { token: Token, ver: u8, parent: u8 },
    /// Switching, primaries differ: waits for a newer view, then answers "conflict".
    Frozen,
    /// Converging a commit to the other write owners.
    Converge(Converge),
    /// A create about to add on the primary.
    CreatePrimary,
    /// A create adding on the other write owners.
    CreateCopies { left: Mask },
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
enum Op {
    #[default]
    Idle,
    Run {
        view: u8,
        phase: Phase,
    },
    /// A commit between its gets and its cas: two item-store calls, so it holds no view.
    Between {
        token: Token,
        ver: u8,
        parent: u8,
    },
    Done,
    Failed,
    /// Its sidecar died.
    Abandoned,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
struct Sidecar {
    /// The view new operations take.
    view: u8,
    reported: u8,
    dead: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum CopyStage {
    Read,
    Add { cell: Cell, left: Mask },
    Converge(Converge),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Driver {
    /// Writing record `generation` to server `next`, one server after the other.
    Write {
        generation: u8,
        next: u8,
    },
    Wait {
        generation: u8,
    },
    /// Item `item` = server * KEYS + key; `fix`: the final CAS pass of the proposed fix.
    Copy {
        fix: bool,
        item: u8,
        stage: CopyStage,
    },
    Cleanup {
        item: u8,
    },
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct State {
    servers: [Server; SERVERS],
    sidecars: [Sidecar; SIDECARS],
    ops: [Op; MAX_OPS],
    retries: [u8; MAX_OPS],
    driver: Driver,
    /// Commit history: the commit each value id was made over (0: none).
    parent: [u8; 16],
    /// Acknowledged commits (CAS items) and puts (immutable items), by id.
    acked: u16,
    deletes_started: u8,
    deletes_acked: u8,
    driver_crashes: u8,
    sidecar_crashes: u8,
    restarts: u8,
    /// Set by a step that saw a wrong answer.
    wrong: Option<Violation>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Violation {
    /// (1) an acknowledged put, not deleted, is not readable under a view in use.
    LostPut { key: u8, view: u8 },
    /// (2) the CAS item reads as a commit that does not descend from every acknowledged one.
    LostCommit { key: u8, view: u8, read: Option<u8> },
    /// (3) a deleted item reads back.
    Resurrected { key: u8, view: u8 },
    /// (4) views two generations apart are in use at once.
    ViewsApart { low: u8, high: u8 },
    /// A get answered what was not allowed when it started.
    WrongAnswer { op: u8, read: Option<u8> },
    /// No step possible, yet not finished.
    Stuck,
}

impl State {
    fn initial(config: &Config) -> State {
        let mut state = State {
            servers: [Server::default(); SERVERS],
            sidecars: [Sidecar::default(); SIDECARS],
            ops: [Op::Idle; MAX_OPS],
            retries: [0; MAX_OPS],
            driver: Driver::Write {
                generation: 1,
                next: 0,
            },
            parent: [0; 16],
            acked: 0,
            deletes_started: 0,
            deletes_acked: 0,
            driver_crashes: config.faults.driver_crashes,
            sidecar_crashes: config.faults.sidecar_crashes,
            restarts: config.faults.restarts,
            wrong: None,
        };
        for key in 0..KEYS {
            if config.initial[key] {
                let id = key as u8 + 1;
                for server in config.c[key] {
                    state.servers[*server].set(key, Cell::Val { ver: 1, id });
                }
                state.acked |= 1 << id;
            }
        }
        for i in config.ops.len()..MAX_OPS {
            state.ops[i] = Op::Done;
        }
        state
    }

    /// Servers catching up.
    fn down(&self) -> Mask {
        (0..SERVERS)
            .filter(|s| self.servers[*s].catching_up)
            .fold(0, |m, s| m | bit(s))
    }

    fn descends(&self, mut id: u8, ancestor: u8) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            if id == 0 {
                return false;
            }
            id = self.parent[usize::from(id)];
        }
    }

    fn acked_of_key(&self, config: &Config, key: usize) -> u16 {
        (1..16u8)
            .filter(|id| self.acked & (1 << id) != 0 && config.key_of_id(*id) == key)
            .fold(0, |m, id| m | (1 << id))
    }

    /// What a get under `view` answers if it ran alone now.
    fn read(&self, config: &Config, view: u8, key: usize) -> Option<u8> {
        for server in config.read_owners(view, key) {
            if self.servers[*server].catching_up {
                continue;
            }
            match self.servers[*server].cells[key] {
                Cell::Empty => continue,
                Cell::Tomb => return None,
                Cell::Val { id, .. } => return Some(id),
            }
        }
        None
    }

    fn expect(&self, config: &Config, key: usize) -> Expect {
        match config.kinds[key] {
            Kind::Cas => Expect::Descends(self.acked_of_key(config, key)),
            Kind::Immutable if self.deletes_acked & bit(key) != 0 => Expect::Absent,
            Kind::Immutable if self.deletes_started & bit(key) != 0 => Expect::Any,
            Kind::Immutable => match self.acked_of_key(config, key) {
                0 => Expect::Any,
                ids => Expect::Value(ids.trailing_zeros() as u8),
            },
        }
    }

    fn allowed(&self, expect: Expect, read: Option<u8>) -> bool {
        match (expect, read) {
            (Expect::Any, _) => true,
            (Expect::Value(id), read) => read == Some(id),
            (Expect::Absent, read) => read.is_none(),
            (Expect::Descends(0), _) => true,
            (Expect::Descends(_), None) => false,
            (Expect::Descends(ids), Some(id)) => (1..16u8)
                .filter(|a| ids & (1 << a) != 0)
                .all(|a| self.descends(id, a)),
        }
    }

    /// Generations in use: live sidecars' views and in-flight operations' views.
    fn views(&self, config: &Config) -> Mask {
        let mut views = 0;
        for sidecar in self.sidecars.iter().filter(|s| !s.dead) {
            views |= bit(usize::from(sidecar.view));
        }
        for (i, op) in self.ops.iter().enumerate().take(config.ops.len()) {
            if let Op::Run { view, .. } = op
                && !self.sidecars[config.ops[i].sidecar].dead
            {
                views |= bit(usize::from(*view));
            }
        }
        views
    }

    fn check(&self, config: &Config) -> Option<Violation> {
        if let Some(wrong) = self.wrong {
            return Some(wrong);
        }
        let views = self.views(config);
        let (low, high) = (
            views.trailing_zeros() as u8,
            7 - views.leading_zeros() as u8,
        );
        if high > low + 1 {
            return Some(Violation::ViewsApart { low, high });
        }
        for view in (0..=config.last_generation()).filter(|v| views & bit(usize::from(*v)) != 0) {
            for key in 0..KEYS {
                let read = self.read(config, view, key);
                let expect = self.expect(config, key);
                if self.allowed(expect, read) {
                    continue;
                }
                let (key, view) = (key as u8, view);
                return Some(match expect {
                    Expect::Value(_) => Violation::LostPut { key, view },
                    Expect::Absent => Violation::Resurrected { key, view },
                    _ => Violation::LostCommit { key, view, read },
                });
            }
        }
        None
    }

    fn finished(&self) -> bool {
        self.driver == Driver::Done
            && self
                .ops
                .iter()
                .all(|op| matches!(op, Op::Done | Op::Failed | Op::Abandoned))
    }
}

// ---------------------------------------------------------------------------------------------
// Steps

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Action {
    Driver,
    DriverCrash,
    /// A sidecar reads every record and takes the highest.
    Refresh(usize),
    Report(usize),
    SidecarCrash(usize),
    /// A server restarted empty.
    Restart(usize),
    /// Operation i starts, or takes its next memcached step (`server`: which of its servers).
    Op(usize, usize),
}

/// One step of a converge; `None` when it has nothing left to do.
fn converge_step(servers: &mut [Server; SERVERS], key: usize, conv: &mut Converge, pick: usize) {
    let server = match conv.at {
        Some((s, _)) => usize::from(s),
        None => pick,
    };
    let step = conv.at.map_or(ConvStep::Gets, |(_, step)| step);
    let target = &mut servers[server];
    match step {
        ConvStep::Gets => match target.cells[key] {
            Cell::Empty => conv.at = Some((server as u8, ConvStep::Add)),
            Cell::Val { ver, .. } if ver < conv.ver => {
                conv.at = Some((server as u8, ConvStep::Cas(target.token(server, key))));
            }
            // Newer or as new there, or deleted: it stays.
            _ => {
                conv.left &= !bit(server);
                conv.at = None;
            }
        },
        ConvStep::Add | ConvStep::Cas(_) => {
            let cell = Cell::Val {
                ver: conv.ver,
                id: conv.id,
            };
            let stored = match step {
                ConvStep::Cas(token) => target.cas(server, key, token, cell),
                _ => target.add(key, cell),
            };
            if stored {
                conv.left &= !bit(server);
                conv.at = None;
            } else {
                conv.at = Some((server as u8, ConvStep::Gets));
            }
        }
    }
}

/// The servers a converge may take its next step on.
fn converge_choices(conv: &Converge) -> Vec<usize> {
    match conv.at {
        Some((s, _)) => vec![usize::from(s)],
        None => members(conv.left).collect(),
    }
}

struct Model<'a> {
    config: &'a Config,
}

impl Model<'_> {
    fn successors(&self, state: &State, out: &mut Vec<(Action, State)>) {
        out.clear();
        let config = self.config;
        if state.wrong.is_some() {
            return;
        }
        // The driver.
        if state.driver != Driver::Done {
            if let Some(next) = self.driver_step(state) {
                out.push((Action::Driver, next));
            }
            if state.driver_crashes > 0 {
                // A new driver reads the records and resumes the step the highest one names.
                let mut next = *state;
                next.driver_crashes -= 1;
                let generation = state.servers.iter().map(|s| s.record).max().unwrap_or(0);
                next.driver = Driver::Write {
                    generation: generation.max(1),
                    next: 0,
                };
                out.push((Action::DriverCrash, next));
            }
        }
        // Sidecars.
        let highest = state.servers.iter().map(|s| s.record).max().unwrap_or(0);
        for (i, sidecar) in state.sidecars.iter().enumerate() {
            if sidecar.dead {
                continue;
            }
            if highest > sidecar.view {
                let mut next = *state;
                next.sidecars[i].view = highest;
                out.push((Action::Refresh(i), next));
            }
            let drained = (0..config.ops.len()).all(|o| {
                config.ops[o].sidecar != i
                    || !matches!(state.ops[o], Op::Run { view, .. } if view < sidecar.view)
            });
            if sidecar.reported < sidecar.view && drained {
                let mut next = *state;
                next.sidecars[i].reported = sidecar.view;
                out.push((Action::Report(i), next));
            }
            if state.sidecar_crashes > 0 {
                let mut next = *state;
                next.sidecar_crashes -= 1;
                next.sidecars[i].dead = true;
                for o in 0..config.ops.len() {
                    if config.ops[o].sidecar == i && !matches!(state.ops[o], Op::Done | Op::Failed)
                    {
                        next.ops[o] = Op::Abandoned;
                    }
                }
                out.push((Action::SidecarCrash(i), next));
            }
        }
        // Servers restarted empty.
        if state.restarts > 0 {
            for s in 0..SERVERS {
                let mut next = *state;
                next.restarts -= 1;
                let incarnation = state.servers[s].incarnation + 1;
                next.servers[s] = Server {
                    incarnation,
                    catching_up: true,
                    ..Server::default()
                };
                out.push((Action::Restart(s), next));
            }
        }
        // Operations.
        for i in 0..config.ops.len() {
            self.op_steps(state, i, out);
        }
    }

    fn driver_step(&self, state: &State) -> Option<State> {
        let config = self.config;
        let mut next = *state;
        match state.driver {
            Driver::Write {
                generation,
                next: server,
            } => {
                next.servers[usize::from(server)].record = generation;
                next.driver = if usize::from(server) + 1 < SERVERS {
                    Driver::Write {
                        generation,
                        next: server + 1,
                    }
                } else {
                    Driver::Wait { generation }
                };
            }
            Driver::Wait { generation } => {
                let all = state
                    .sidecars
                    .iter()
                    .all(|s| s.dead || s.reported >= generation);
                if !all && !config.rules.skip_report_wait {
                    return None;
                }
                let write_next = Driver::Write {
                    generation: generation + 1,
                    next: 0,
                };
                next.driver = match config.stage(generation) {
                    Stage::Copying => Driver::Copy {
                        fix: false,
                        item: 0,
                        stage: CopyStage::Read,
                    },
                    Stage::Switching if config.rules.final_cas_copy => Driver::Copy {
                        fix: true,
                        item: 0,
                        stage: CopyStage::Read,
                    },
                    Stage::StableT => Driver::Cleanup { item: 0 },
                    _ => write_next,
                };
            }
            Driver::Copy { fix, item, stage } => {
                let (source, key) = (usize::from(item) / KEYS, usize::from(item) % KEYS);
                let done = |next: &mut State| {
                    next.driver = if usize::from(item) + 1 < SERVERS * KEYS {
                        Driver::Copy {
                            fix,
                            item: item + 1,
                            stage: CopyStage::Read,
                        }
                    } else {
                        let stage = if fix {
                            Stage::StableT
                        } else {
                            Stage::Switching
                        };
                        Driver::Write {
                            generation: config.generation(stage),
                            next: 0,
                        }
                    };
                };
                match stage {
                    CopyStage::Read => {
                        let wanted = !fix
                            || (config.kinds[key] == Kind::Cas
                                && config.c[key][0] != config.t[key][0]
                                && config.c[key].contains(&source));
                        let cell = state.servers[source].cells[key];
                        let targets = mask(config.t[key]) & !bit(source);
                        match (wanted, cell) {
                            (true, Cell::Val { ver, id }) if targets != 0 => {
                                let stage = match config.kinds[key] {
                                    Kind::Immutable => CopyStage::Add {
                                        cell,
                                        left: targets,
                                    },
                                    Kind::Cas => CopyStage::Converge(Converge {
                                        left: targets,
                                        at: None,
                                        ver,
                                        id,
                                    }),
                                };
                                next.driver = Driver::Copy { fix, item, stage };
                            }
                            _ => done(&mut next),
                        }
                    }
                    CopyStage::Add { cell, left } => {
                        let target = members(left).next().expect("a target");
                        next.servers[target].add(key, cell);
                        let left = left & !bit(target);
                        if left == 0 {
                            done(&mut next);
                        } else {
                            next.driver = Driver::Copy {
                                fix,
                                item,
                                stage: CopyStage::Add { cell, left },
                            };
                        }
                    }
                    CopyStage::Converge(mut conv) => {
                        let pick = converge_choices(&conv)[0];
                        converge_step(&mut next.servers, key, &mut conv, pick);
                        if conv.left == 0 {
                            done(&mut next);
                        } else {
                            next.driver = Driver::Copy {
                                fix,
                                item,
                                stage: CopyStage::Converge(conv),
                            };
                        }
                    }
                }
            }
            Driver::Cleanup { item } => {
                let (server, key) = (usize::from(item) / KEYS, usize::from(item) % KEYS);
                // Servers of T lose what they do not own under T; those that left are flushed.
                if !config.t[key].contains(&server) {
                    next.servers[server].cells[key] = Cell::Empty;
                }
                next.driver = if usize::from(item) + 1 < SERVERS * KEYS {
                    Driver::Cleanup { item: item + 1 }
                } else {
                    Driver::Done
                };
            }
            Driver::Done => return None,
        }
        Some(next)
    }

    fn op_steps(&self, state: &State, i: usize, out: &mut Vec<(Action, State)>) {
        let config = self.config;
        let spec = config.ops[i];
        let key = spec.key;
        let sidecar = state.sidecars[spec.sidecar];
        if sidecar.dead {
            return;
        }
        let id = Config::op_id(i);
        match state.ops[i] {
            Op::Idle => {
                if let Some(after) = spec.after {
                    match state.ops[after] {
                        Op::Done => {}
                        // What it follows never finished: it never starts.
                        Op::Failed | Op::Abandoned => {
                            let mut next = *state;
                            next.ops[i] = Op::Failed;
                            out.push((Action::Op(i, 0), next));
                            return;
                        }
                        _ => return,
                    }
                }
                let view = sidecar.view;
                let phase = match spec.kind {
                    OpKind::Put => Phase::Put {
                        left: config.write_owners(view, key, false),
                    },
                    OpKind::Delete => {
                        let owners = config.write_owners(view, key, true);
                        Phase::Delete {
                            del: owners,
                            tomb: owners,
                        }
                    }
                    OpKind::Get => Phase::Get {
                        next: 0,
                        missed: 0,
                        found: Cell::Empty,
                        repair: 0,
                        expect: state.expect(config, key),
                    },
                    OpKind::Commit => Phase::Token,
                    OpKind::Create => Phase::CreatePrimary,
                };
                let mut next = *state;
                next.ops[i] = Op::Run { view, phase };
                if spec.kind == OpKind::Delete {
                    next.deletes_started |= bit(key);
                }
                out.push((Action::Op(i, 0), next));
            }
            Op::Between { token, ver, parent } => {
                // The cas call: a new item-store call, under the sidecar's view now.
                let mut next = *state;
                next.ops[i] = Op::Run {
                    view: sidecar.view,
                    phase: Phase::Cas { token, ver, parent },
                };
                out.push((Action::Op(i, 0), next));
            }
            Op::Run { view, phase } => {
                for (server, next) in self.run_step(state, i, id, view, phase) {
                    out.push((Action::Op(i, server), next));
                }
            }
            Op::Done | Op::Failed | Op::Abandoned => {}
        }
    }

    /// Every possible next step of a running operation, with the server it acts on.
    fn run_step(
        &self,
        state: &State,
        i: usize,
        id: u8,
        view: u8,
        phase: Phase,
    ) -> Vec<(usize, State)> {
        let config = self.config;
        let key = config.ops[i].key;
        let mut steps = Vec::new();
        let running = |next: &mut State, phase: Phase| next.ops[i] = Op::Run { view, phase };
        let retry = |next: &mut State| {
            next.retries[i] += 1;
            next.ops[i] = if next.retries[i] > MAX_RETRIES {
                Op::Failed
            } else {
                Op::Idle
            };
        };
        match phase {
            Phase::Put { left } => {
                for server in members(left) {
                    let mut next = *state;
                    next.servers[server].set(key, Cell::Val { ver: 0, id });
                    let left = left & !bit(server);
                    if left == 0 {
                        next.ops[i] = Op::Done;
                        next.acked |= 1 << id;
                    } else {
                        running(&mut next, Phase::Put { left });
                    }
                    steps.push((server, next));
                }
            }
            Phase::Delete { del, tomb } => {
                for server in members(del | tomb) {
                    let mut next = *state;
                    let (mut del, mut tomb) = (del, tomb);
                    if del & bit(server) != 0 {
                        next.servers[server].set(key, Cell::Empty);
                        del &= !bit(server);
                    } else {
                        // A set, not an add: it also replaces a copy written back meanwhile.
                        if !config.rules.no_tombstones {
                            next.servers[server].set(key, Cell::Tomb);
                        }
                        tomb &= !bit(server);
                    }
                    if del | tomb == 0 {
                        next.ops[i] = Op::Done;
                        next.deletes_acked |= bit(key);
                    } else {
                        running(&mut next, Phase::Delete { del, tomb });
                    }
                    steps.push((server, next));
                }
            }
            Phase::Get {
                next: at,
                missed,
                found,
                repair,
                expect,
            } => {
                let owners = config.read_owners(view, key);
                let mut next = *state;
                let finish = |next: &mut State, read: Option<u8>| {
                    next.ops[i] = Op::Done;
                    // A delete that started meanwhile may make it absent.
                    let deleting = state.deletes_started & bit(key) != 0
                        && config.kinds[key] == Kind::Immutable;
                    if !(state.allowed(expect, read) || (deleting && read.is_none())) {
                        next.wrong = Some(Violation::WrongAnswer { op: i as u8, read });
                    }
                };
                if let Cell::Val { id: value, .. } = found {
                    let server = members(repair).next().expect("a repair");
                    next.servers[server].add(key, found);
                    let repair = repair & !bit(server);
                    if repair == 0 {
                        finish(&mut next, Some(value));
                    } else {
                        running(
                            &mut next,
                            Phase::Get {
                                next: at,
                                missed,
                                found,
                                repair,
                                expect,
                            },
                        );
                    }
                    steps.push((server, next));
                } else {
                    let server = owners[usize::from(at)];
                    // A server catching up is passed over, neither read nor repaired.
                    let cell = if state.servers[server].catching_up {
                        Cell::Empty
                    } else {
                        state.servers[server].cells[key]
                    };
                    let missed_now = if state.servers[server].catching_up {
                        missed
                    } else {
                        missed | bit(server)
                    };
                    match cell {
                        Cell::Tomb => finish(&mut next, None),
                        Cell::Empty if usize::from(at) + 1 == owners.len() => {
                            finish(&mut next, None)
                        }
                        Cell::Empty => running(
                            &mut next,
                            Phase::Get {
                                next: at + 1,
                                missed: missed_now,
                                found,
                                repair,
                                expect,
                            },
                        ),
                        cell @ Cell::Val { id: value, .. } => {
                            if missed == 0 {
                                finish(&mut next, Some(value));
                            } else {
                                running(
                                    &mut next,
                                    Phase::Get {
                                        next: at,
                                        missed,
                                        found: cell,
                                        repair: missed,
                                        expect,
                                    },
                                );
                            }
                        }
                    }
                    steps.push((server, next));
                }
            }
            Phase::Token => {
                let readers: Vec<usize> = config
                    .read_owners(view, key)
                    .iter()
                    .copied()
                    .filter(|s| !state.servers[*s].catching_up)
                    .collect();
                let Some(&server) = readers.first() else {
                    let mut next = *state;
                    next.ops[i] = Op::Failed;
                    steps.push((0, next));
                    return steps;
                };
                let mut next = *state;
                match state.servers[server].cells[key] {
                    Cell::Val { ver, id: parent } => {
                        next.ops[i] = Op::Between {
                            token: state.servers[server].token(server, key),
                            ver,
                            parent,
                        };
                    }
                    _ => {
                        // The primary lost it: put back the newest copy of the other owners.
                        let newest = readers[1..]
                            .iter()
                            .filter_map(|s| match state.servers[*s].cells[key] {
                                Cell::Val { ver, id } => Some((ver, id)),
                                _ => None,
                            })
                            .max();
                        match newest {
                            Some((ver, id)) => running(
                                &mut next,
                                Phase::Restore {
                                    server: server as u8,
                                    cell: Cell::Val { ver, id },
                                },
                            ),
                            None => next.ops[i] = Op::Failed,
                        }
                    }
                }
                steps.push((server, next));
            }
            Phase::Restore { server, cell } => {
                let mut next = *state;
                next.servers[usize::from(server)].add(key, cell);
                running(&mut next, Phase::Token);
                steps.push((usize::from(server), next));
            }
            Phase::Cas { token, ver, parent } => {
                let mut next = *state;
                match config.cas_primary(view, key, state.down()) {
                    None => running(&mut next, Phase::Frozen),
                    Some(primary) => {
                        let cell = Cell::Val { ver: ver + 1, id };
                        if next.servers[primary].cas(primary, key, token, cell) {
                            next.parent[usize::from(id)] = parent;
                            let left = config.write_owners(view, key, false) & !bit(primary);
                            self.converged_or_running(&mut next, i, view, id, ver + 1, left);
                        } else {
                            retry(&mut next);
                        }
                    }
                }
                steps.push((
                    config.cas_primary(view, key, state.down()).unwrap_or(0),
                    next,
                ));
            }
            Phase::Frozen => {
                if state.sidecars[config.ops[i].sidecar].view > view {
                    let mut next = *state;
                    retry(&mut next);
                    steps.push((0, next));
                }
            }
            Phase::Converge(conv) => {
                for server in converge_choices(&conv) {
                    let mut next = *state;
                    let mut conv = conv;
                    converge_step(&mut next.servers, key, &mut conv, server);
                    if conv.left == 0 {
                        next.ops[i] = Op::Done;
                        next.acked |= 1 << id;
                    } else {
                        running(&mut next, Phase::Converge(conv));
                    }
                    steps.push((server, next));
                }
            }
            Phase::CreatePrimary => {
                let mut next = *state;
                match config.cas_primary(view, key, state.down()) {
                    None => running(&mut next, Phase::Frozen),
                    Some(primary) => {
                        if next.servers[primary].add(key, Cell::Val { ver: 1, id }) {
                            next.parent[usize::from(id)] = 0;
                            let left = config.write_owners(view, key, false) & !bit(primary);
                            if left == 0 {
                                next.ops[i] = Op::Done;
                                next.acked |= 1 << id;
                            } else {
                                running(&mut next, Phase::CreateCopies { left });
                            }
                        } else {
                            next.ops[i] = Op::Failed;
                        }
                    }
                }
                steps.push((
                    config.cas_primary(view, key, state.down()).unwrap_or(0),
                    next,
                ));
            }
            Phase::CreateCopies { left } => {
                for server in members(left) {
                    let mut next = *state;
                    // One already there holds this version or a later one.
                    next.servers[server].add(key, Cell::Val { ver: 1, id });
                    let left = left & !bit(server);
                    if left == 0 {
                        next.ops[i] = Op::Done;
                        next.acked |= 1 << id;
                    } else {
                        running(&mut next, Phase::CreateCopies { left });
                    }
                    steps.push((server, next));
                }
            }
        }
        steps
    }

    fn converged_or_running(
        &self,
        next: &mut State,
        i: usize,
        view: u8,
        id: u8,
        ver: u8,
        left: Mask,
    ) {
        if left == 0 {
            next.ops[i] = Op::Done;
            next.acked |= 1 << id;
        } else {
            next.ops[i] = Op::Run {
                view,
                phase: Phase::Converge(Converge {
                    left,
                    at: None,
                    ver,
                    id,
                }),
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exploration

/// A `HashSet<u64>` of fingerprints needs no second hashing.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 fingerprints are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A fast 64-bit hash (FxHash-like, two lanes mixed at the end): SipHash is several times
/// slower in a debug build, and exploration is mostly hashing. Two states taken for one
/// another would only hide states: at a few million states in 2^64 that is out of reach.
#[derive(Default)]
struct Fingerprint(u64, u64);

impl Hasher for Fingerprint {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u8(*byte);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        self.1 = (self.1.rotate_left(7) ^ n).wrapping_mul(0x9e_37_79_b9_7f_4a_7c_15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        let mut x = self.0 ^ self.1.rotate_left(32);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff_51_af_d7_ed_55_8c_cd);
        x ^ (x >> 33)
    }
}

fn fingerprint(state: &State) -> u64 {
    let mut hasher = Fingerprint::default();
    state.hash(&mut hasher);
    hasher.finish()
}

struct Outcome {
    states: usize,
    violation: Option<(Violation, Vec<String>)>,
}

/// Depth-first over every interleaving; the first violation comes with the path to it.
fn explore(config: &Config) -> Outcome {
    let model = Model { config };
    let initial = State::initial(config);
    let mut visited: HashSet<u64, BuildHasherDefault<Identity>> = HashSet::default();
    visited.insert(fingerprint(&initial));
    // Each frame: a state, its successors and the index of the next one to visit.
    let mut stack: Vec<Frame> = Vec::new();
    let mut successors = Vec::new();
    model.successors(&initial, &mut successors);
    stack.push((initial, successors.clone(), 0));
    let violation = |stack: &[Frame], violation: Violation| {
        let trace = stack
            .iter()
            .filter(|(_, _, next)| *next > 0)
            .map(|(before, succ, next)| describe(config, before, &succ[*next - 1]))
            .collect();
        Some((violation, trace))
    };
    while let Some((_, succ, next)) = stack.last_mut() {
        if *next == succ.len() {
            stack.pop();
            continue;
        }
        let child = succ[*next].1;
        *next += 1;
        if !visited.insert(fingerprint(&child)) {
            continue;
        }
        if let Some(found) = child.check(config) {
            return Outcome {
                states: visited.len(),
                violation: violation(&stack, found),
            };
        }
        model.successors(&child, &mut successors);
        if successors.is_empty() && !child.finished() {
            return Outcome {
                states: visited.len(),
                violation: violation(&stack, Violation::Stuck),
            };
        }
        stack.push((child, successors.clone(), 0));
    }
    Outcome {
        states: visited.len(),
        violation: None,
    }
}

fn show_servers(state: &State) -> String {
    let cell = |c: Cell| match c {
        Cell::Empty => "-".to_string(),
        Cell::Tomb => "T".to_string(),
        Cell::Val { ver, id } => format!("{id}v{ver}"),
    };
    (0..SERVERS)
        .map(|s| {
            let cells: Vec<String> = state.servers[s].cells.iter().map(|c| cell(*c)).collect();
            format!(
                "{}[g{} {}]",
                NAMES[s],
                state.servers[s].record,
                cells.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(config: &Config, before: &State, (action, after): &(Action, State)) -> String {
    let what = match action {
        Action::Driver => format!("driver {:?}", before.driver),
        Action::DriverCrash => "driver crashes; a new one resumes".to_string(),
        Action::Refresh(s) => format!("sidecar {s} takes view g{}", after.sidecars[*s].view),
        Action::Report(s) => format!("sidecar {s} reports g{}", after.sidecars[*s].reported),
        Action::SidecarCrash(s) => format!("sidecar {s} dies"),
        Action::Restart(s) => format!("server {} restarts empty", NAMES[*s]),
        Action::Op(i, server) => {
            let spec = config.ops[*i];
            let on = match before.ops[*i] {
                Op::Idle | Op::Between { .. } => "starts".to_string(),
                _ => format!("on {}", NAMES[*server]),
            };
            format!(
                "op {i} (sidecar {} {:?} k{}) {on}: {:?} -> {:?}",
                spec.sidecar, spec.kind, spec.key, before.ops[*i], after.ops[*i]
            )
        }
    };
    format!("{what}\n      {}", show_servers(after))
}

fn run(config: &Config) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = explore(config);
    eprintln!(
        "{}: {} states in {:.1?}{}",
        config.name,
        outcome.states,
        started.elapsed(),
        match &outcome.violation {
            Some((v, trace)) => format!(", violation {v:?} after {} steps", trace.len()),
            None => String::new(),
        }
    );
    outcome
}

fn assert_holds(config: &Config) {
    let outcome = run(config);
    if let Some((violation, trace)) = outcome.violation {
        panic!("{}: {violation:?}\n  {}", config.name, trace.join("\n  "));
    }
}

/// Runs a configuration with one rule taken out and asserts the checker catches it.
fn assert_caught(config: &Config, expected: fn(&Violation) -> bool) -> Vec<String> {
    let outcome = run(config);
    let Some((violation, trace)) = outcome.violation else {
        panic!("{}: no violation found: the check cannot fail", config.name);
    };
    assert!(
        expected(&violation),
        "{}: expected another violation, found {violation:?}\n  {}",
        config.name,
        trace.join("\n  ")
    );
    trace
}

fn full() -> bool {
    std::env::var_os("ZMM_MODEL_FULL").is_some_and(|v| v != "0")
}

// ---------------------------------------------------------------------------------------------
// Configurations

const NO_FAULTS: Faults = Faults {
    driver_crashes: 0,
    sidecar_crashes: 0,
    restarts: 0,
};

const CRASH_DRIVER: Faults = Faults {
    driver_crashes: 1,
    ..NO_FAULTS
};

/// The protocol as docs/placement-changes.md writes it.
const AS_WRITTEN: Rules = Rules {
    no_freeze: false,
    read_t_in_copying: false,
    skip_report_wait: false,
    no_tombstones: false,
    write_c_only_in_copying: false,
    prepare: false,
    final_cas_copy: false,
};

/// The protocol as the sidecar runs it: with the preparing generation. (A final copy of CAS
/// items after switching, `final_cas_copy`, was tried here and never needed.)
const FIXED: Rules = Rules {
    prepare: true,
    ..AS_WRITTEN
};

/// The changes checked: scale up and down between {a, b} and {a, b, c}, and R 1 -> 2 on {a, b}.
const CHANGES: [(&str, Layout, Layout); 4] = [
    ("scale up R=1", (AB, 1), (ABC, 1)),
    ("scale up R=2", (AB, 2), (ABC, 2)),
    ("scale down R=2", (ABC, 2), (AB, 2)),
    ("R 1 -> 2", (AB, 1), (AB, 2)),
];

/// Every change under ZMM_MODEL_FULL; by default the two smallest (R=1 scale up, R 1 -> 2),
/// which fit the test budget of a debug build.
fn check_all_changes(workload: &Workload, rules: Rules, faults: Faults) {
    for (name, from, to) in CHANGES {
        if full() || from.1 == 1 {
            assert_holds(&config(name, from, to, workload, rules, faults));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 1: a delete beside copying brings the item back

/// As written, copying sidecars put on owners(T) while sidecars still on "stable on C" delete on
/// owners(C) only: an item put by the first and deleted by the second stays on T, and reads come
/// back to it from switching on. The copier cannot help: it only adds what T lacks.
#[test]
fn as_written_a_delete_beside_copying_resurrects_the_item() {
    let c = config(
        "as written, scale up R=1, immutable",
        (AB, 1),
        (ABC, 1),
        &IMMUTABLE,
        AS_WRITTEN,
        NO_FAULTS,
    );
    let trace = assert_caught(&c, |v| matches!(v, Violation::Resurrected { key: 0, .. }));
    eprintln!("  {}", trace.join("\n  "));
}

#[test]
fn immutable_items_hold_with_a_preparing_generation() {
    // R 1 -> 2 adds 2.5 million states (20 s): full runs only.
    if full() {
        check_all_changes(&IMMUTABLE, FIXED, CRASH_DRIVER);
    } else {
        let (name, from, to) = CHANGES[0];
        assert_holds(&config(name, from, to, &IMMUTABLE, FIXED, CRASH_DRIVER));
    }
}

// ---------------------------------------------------------------------------------------------
// CAS items

/// CAS items are never deleted: the protocol as written holds for them.
#[test]
fn cas_items_hold_as_written() {
    check_all_changes(&CAS_MOVING, AS_WRITTEN, CRASH_DRIVER);
}

#[test]
fn cas_items_hold_with_the_fixes() {
    check_all_changes(&CAS_MOVING, FIXED, CRASH_DRIVER);
    // R 1 -> 2 of this workload alone is 19 million states, three minutes: full runs only.
    if full() {
        check_all_changes(&CAS_STAYING_AND_CREATED, FIXED, CRASH_DRIVER);
    } else {
        let (name, from, to) = CHANGES[0];
        let c = config(
            name,
            from,
            to,
            &CAS_STAYING_AND_CREATED,
            FIXED,
            CRASH_DRIVER,
        );
        assert_holds(&c);
    }
}

// ---------------------------------------------------------------------------------------------
// Each check fails when the rule it relies on is taken out

fn mutant(name: &'static str, workload: &Workload, rules: Rules) -> Config {
    config(name, (AB, 1), (ABC, 1), workload, rules, NO_FAULTS)
}

#[test]
fn reading_t_while_copying_loses_a_put() {
    let rules = Rules {
        read_t_in_copying: true,
        ..FIXED
    };
    let c = mutant("reads from T in copying", &IMMUTABLE, rules);
    assert_caught(&c, |v| {
        matches!(v, Violation::LostPut { .. } | Violation::WrongAnswer { .. })
    });
}

#[test]
fn copying_writes_on_c_alone_lose_a_put() {
    let rules = Rules {
        write_c_only_in_copying: true,
        ..FIXED
    };
    let c = mutant("copying writes on C alone", &IMMUTABLE, rules);
    // A put missing on T reads as lost, or a deleted item's older copy as back.
    assert_caught(&c, |v| {
        matches!(v, Violation::LostPut { .. } | Violation::Resurrected { .. })
    });
}

#[test]
fn switching_without_freeze_forks_the_commits() {
    let rules = Rules {
        no_freeze: true,
        ..FIXED
    };
    let c = mutant("no freeze in switching", &CAS_MOVING, rules);
    assert_caught(&c, |v| matches!(v, Violation::LostCommit { .. }));
}

#[test]
fn deletes_without_tombstones_resurrect() {
    let rules = Rules {
        no_tombstones: true,
        ..FIXED
    };
    let c = mutant("no tombstones", &IMMUTABLE, rules);
    assert_caught(&c, |v| matches!(v, Violation::Resurrected { .. }));
}

#[test]
fn skipping_the_reports_puts_views_two_apart() {
    let rules = Rules {
        skip_report_wait: true,
        ..FIXED
    };
    let c = mutant("no wait for reports", &IMMUTABLE, rules);
    assert_caught(&c, |v| matches!(v, Violation::ViewsApart { .. }));
}

// ---------------------------------------------------------------------------------------------
// Finding 2: a primary restarted between a commit's cas and its converge

/// Found with a sidecar crash and a restart allowed (scale up R=2, k1 owners [c, a] under T),
/// but the trace needs no placement change: in the stable layout, commit A cas'es on primary c
/// (v1 -> v2); c restarts empty (catching up, so a becomes primary); commit B cas'es on a
/// (v1 -> v2) and its writer dies; A's converge to a finds version 2 there and takes it for its
/// own (converge compares versions, not values): A is acknowledged while held nowhere, and reads
/// return B, which does not descend from A. The same holds for replicas.rs `converge` today.
/// Suspected beforehand, not shown: a copying writer dying after its cas on primary(C) once the
/// copier passed the item; the final CAS copy (`Rules::final_cas_copy`) is modelled for it.
const CRASH_AND_RESTART: Faults = Faults {
    driver_crashes: 0,
    sidecar_crashes: 1,
    restarts: 1,
};

fn crashed_writer(rules: Rules) -> Config {
    config(
        "scale up R=2, a writer dies, a server restarts empty",
        (AB, 2),
        (ABC, 2),
        &CAS_CRASHED_WRITER,
        rules,
        CRASH_AND_RESTART,
    )
}

#[test]
fn a_primary_restarted_between_cas_and_converge_loses_an_acknowledged_commit() {
    let rules = Rules {
        final_cas_copy: false,
        ..FIXED
    };
    let trace = assert_caught(&crashed_writer(rules), |v| {
        matches!(
            v,
            Violation::LostCommit { .. } | Violation::WrongAnswer { .. }
        )
    });
    eprintln!("  {}", trace.join("\n  "));
}

/// Not passing here: the model does not model what fixed finding 2 in the sidecar (a commit
/// with copies is acknowledged only if its primary kept its incarnation marker; a copy that
/// meets the same version with other contents fails). The sidecar's own test of that fix is
/// `placement::replicas::tests::a_commit_whose_primary_restarts_before_its_copies_is_not_acknowledged`.
#[test]
#[ignore = "finding 2 is fixed in the sidecar, not in this model; see the comment"]
fn a_primary_restart_and_a_dead_writer_lose_nothing() {
    assert_holds(&crashed_writer(FIXED));
}

// ---------------------------------------------------------------------------------------------
// Bigger configurations (ZMM_MODEL_FULL=1): minutes in a debug build

#[test]
fn full_configurations() {
    if !full() {
        eprintln!("ZMM_MODEL_FULL unset: bigger configurations skipped");
        return;
    }
    let all_faults = Faults {
        driver_crashes: 1,
        sidecar_crashes: 0,
        restarts: 0,
    };
    check_all_changes(&MIXED, FIXED, all_faults);
    check_all_changes(&CAS_MOVING, FIXED, CRASH_AND_RESTART);
}
