//! Network partition between the hub and some dashboards: heartbeats time
//! out, counters return to exact values, clients reconnect after the repair,
//! and no dashboard receives an event twice (see
//! `warden_sim::scenarios::partition` for the invariants).

use warden_sim::scenarios::partition;
use warden_sim::seeds::run_seeds;

#[test]
fn partition_heals() {
    run_seeds("partition", "partition_heals", 20, partition::run);
}
