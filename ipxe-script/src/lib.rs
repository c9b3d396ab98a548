#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

// NB: one public path per item (see "Organization" in the crate docs): the
// script model lives in private modules and is re-exported here; `netboot`
// is the one public module.
mod command;
mod error;
pub mod netboot;
mod parse;
mod script;
mod setting;
mod value;

pub use command::{Command, Image, TYPED_COMMANDS};
pub use error::{Arg, Error, KernelParamProblem, ParseError, ParseErrorKind};
pub use parse::parse;
pub use script::{Joiner, Line, Script};
pub use setting::{SettingName, SETTING_TYPES};
pub use value::{is_ipxe_space, is_valid_setting_name, Part, Value, ESCAPE_PREFIX};
