//! Migration between roles: in a split layout a session moves, whole, to a worker whose roles
//! match its `Phase` (a command worker hands a stream to a data worker, and back), by the
//! target's mailbox (`Msg::Adopt`). Only a connection with nothing in flight moves.
//!
//! It moves connections in and out of the slab and the timer wheel; it must never drive a
//! session, and a hand-off the target cannot take leaves the connection here, as it was but for
//! a new generation.

use std::sync::atomic::Ordering;

use slab::Slab;

use super::conn::{Conn, RecvState};
use super::op::Gens;
use crate::layout::Roles;
use crate::session::Phase;
use crate::shared::{Msg, Shared};
use crate::timer::Wheel;

/// The role the session's phase wants, when `roles` (this worker's) lack it.
pub(super) fn missing_role(roles: Roles, c: &Conn) -> Option<Roles> {
    let need = match c.session.phase() {
        Phase::Command => Roles::COMMAND,
        Phase::Data => Roles::DATA,
    };
    (!roles.contains(need)).then_some(need)
}

/// This worker, as migration sees it.
pub(super) struct Here<'a> {
    pub(super) index: usize,
    pub(super) roles: Roles,
    pub(super) shared: &'a Shared,
}

/// Moves the session at `key` to a worker whose roles match its phase, if this one's do not;
/// true when it left. A saturated target leaves it here (with a new generation, same key).
pub(super) fn try_migrate(
    here: Here<'_>,
    conns: &mut Slab<Conn>,
    wheel: &mut Wheel,
    gens: &mut Gens,
    key: usize,
) -> bool {
    let Some(need) = missing_role(here.roles, &conns[key]) else {
        return false;
    };
    let c = &conns[key];
    if c.recv != RecvState::None {
        return false;
    }
    let workers = &here.shared.workers;
    let Some(target) = here.shared.least_loaded(need) else {
        return false;
    };
    if let Some((slot, _)) = c.timer {
        wheel.remove(key as u32, slot);
    }
    let mut conn = conns.remove(key);
    conn.timer = None;
    workers[here.index].conns.fetch_sub(1, Ordering::Relaxed);
    workers[target].conns.fetch_add(1, Ordering::Relaxed);
    match workers[target].mailbox.send(Msg::Adopt(Box::new(conn))) {
        Ok(()) => true,
        Err(Msg::Adopt(conn)) => {
            // The target is saturated: keep serving here rather than wait.
            workers[target].conns.fetch_sub(1, Ordering::Relaxed);
            workers[here.index].conns.fetch_add(1, Ordering::Relaxed);
            let mut conn = *conn;
            conn.gen = gens.take();
            let new_key = conns.insert(conn);
            debug_assert_eq!(new_key, key);
            false
        }
        Err(_) => unreachable!("mailbox returns the message it was given"),
    }
}

/// Takes in a connection another worker handed over: a generation of this worker's, no timer
/// yet. Returns its key.
pub(super) fn adopt(conns: &mut Slab<Conn>, gens: &mut Gens, mut conn: Conn) -> usize {
    conn.gen = gens.take();
    conn.timer = None;
    conns.insert(conn)
}
