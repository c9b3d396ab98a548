#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod command;
pub mod error;
pub mod netboot;
pub mod parse;
pub mod script;
pub mod value;

pub use command::{Command, Image};
pub use error::{Error, ParseError, ParseErrorKind};
pub use parse::parse;
pub use script::{Joiner, Line, Script};
pub use value::{Part, Value};
