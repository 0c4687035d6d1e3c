//! One module per subcommand: its clap arguments and the function that runs it.

pub mod bench;
pub mod logs;
pub mod packet;
pub mod relay;
pub mod rpc;
