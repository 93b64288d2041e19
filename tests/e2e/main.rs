//! One end-to-end test binary (ripgrep-style): the real `closeflow` binary, the real simulator
//! and real HTTP on loopback.

mod against;
mod cache_races;
mod cli;
mod clients;
mod close;
mod cluster;
mod cluster_restarts;
mod console;
mod crash;
mod damage;
mod diff;
mod differential;
mod fidelity;
mod fuzz_corpus;
mod hardening;
mod hostile;
mod operations;
mod plans;
mod readme;
mod robust;
mod secrets;
mod serve;
mod sim_cmd;
mod throughput;
