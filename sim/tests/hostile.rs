//! Hostile peers (malformed floods, garbage, silent connections, a client
//! that never reads) next to honest clients, under a hair-trigger ladder: no
//! recovery action fires, every honest dashboard receives every accepted
//! event in order, and the door sheds every silent connection in time (see
//! `warden_sim::scenarios::hostile`).

use warden_sim::scenarios::hostile;
use warden_sim::seeds::run_seeds;

#[test]
fn hostile_peers_never_drive_recovery() {
    run_seeds(
        "hostile",
        "hostile_peers_never_drive_recovery",
        24,
        hostile::run,
    );
}
