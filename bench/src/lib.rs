//! The Tollgate benchmark harness. The work is in `run.sh` and the `bare-forwarder`
//! binary (the proxying yardstick); see `bench/README.md`.
