//! A flood from one hook to many dashboards with slow readers: delivered +
//! counted drops = sent x receivers, nothing silent (see
//! `warden_sim::scenarios::flood`).

use warden_sim::scenarios::flood;
use warden_sim::seeds::run_seeds;

#[test]
fn flood_accounts_for_every_delivery() {
    run_seeds("flood", "flood_accounts_for_every_delivery", 20, flood::run);
}
