//! The server: its routes without a socket (`routes`), its event streams
//! and push beside `/chat` (`events`), and the `chatflow-server` binary as
//! a process (`process`).
#![cfg(feature = "server")]

mod events;
#[cfg(feature = "cli")]
mod process;
mod routes;
mod sse_reader;
