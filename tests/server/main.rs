//! The server: its routes without a socket (`routes`), and the
//! `chatflow-server` binary as a process (`process`).
#![cfg(feature = "server")]

#[cfg(feature = "cli")]
mod process;
mod routes;
