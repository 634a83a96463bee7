//! Argument checking shared by every Ruby-facing function, and the
//! exception classes of `lib/mwrap/error.rb` as seen from Rust.
//!
//! Every message names the bad value (`inspect`) and its class.

use magnus::{
    prelude::*, value::ReprValue, Error, ExceptionClass, Integer, RBignum, RModule, RString, Ruby,
    Value,
};

/// `Mwrap::NAME`, an exception class defined in `lib/mwrap/error.rb`.
pub fn mwrap_exception(ruby: &Ruby, name: &str) -> Result<ExceptionClass, Error> {
    let module: RModule = ruby.class_object().const_get("Mwrap")?;
    let value: Value = module.const_get(name)?;
    ExceptionClass::from_value(value).ok_or_else(|| {
        Error::new(
            ruby.exception_type_error(),
            format!(
                "Mwrap::{name} is not an exception class: {}",
                value.inspect()
            ),
        )
    })
}

/// The NoMemoryError raised when a copy out of the preload could not get
/// memory (the process is out of it), naming what was being copied.
pub fn no_memory(ruby: &Ruby, what: &str) -> Error {
    Error::new(
        ruby.exception_no_mem_error(),
        format!("{what}: no memory to copy mwrap's tables"),
    )
}

/// `"VALUE (Class)"`, as messages name a bad value.
pub fn describe(value: Value) -> String {
    format!("{} ({})", value.inspect(), class_name(value))
}

pub fn class_name(value: Value) -> String {
    value.class().inspect()
}

/// A TypeError: `WHAT must be EXPECTED, not VALUE (Class)`.
pub fn type_error(ruby: &Ruby, what: &str, expected: &str, value: Value) -> Error {
    Error::new(
        ruby.exception_type_error(),
        format!("{what} must be {expected}, not {}", describe(value)),
    )
}

/// `value` as a String: a String itself, or what its `to_str` returns (as
/// Ruby's implicit conversion does). Anything else is a TypeError.
pub fn string_arg(ruby: &Ruby, what: &str, value: Value) -> Result<RString, Error> {
    if let Some(s) = RString::from_value(value) {
        return Ok(s);
    }
    if !value.is_nil() && value.respond_to("to_str", false)? {
        let converted: Value = value.funcall("to_str", ())?;
        if let Some(s) = RString::from_value(converted) {
            return Ok(s);
        }
    }
    Err(type_error(ruby, what, "a String", value))
}

/// A byte count such as `min`: nil means 0; a negative Integer is an
/// ArgumentError; anything but an Integer is a TypeError. Integers beyond
/// u64 saturate (they select nothing).
pub fn byte_count(ruby: &Ruby, what: &str, value: Option<Value>) -> Result<u64, Error> {
    let Some(value) = value.filter(|v| !v.is_nil()) else {
        return Ok(0);
    };
    let Some(int) = Integer::from_value(value) else {
        return Err(type_error(ruby, what, "an Integer", value));
    };
    let negative = || {
        Error::new(
            ruby.exception_arg_error(),
            format!("{what} must not be negative: {}", value.inspect()),
        )
    };
    if let Ok(n) = int.to_i64() {
        return u64::try_from(n).map_err(|_| negative());
    }
    match RBignum::from_value(value) {
        Some(big) if big.is_negative() => Err(negative()),
        Some(big) => Ok(big.to_u64().unwrap_or(u64::MAX)),
        None => Ok(int.to_u64().unwrap_or(u64::MAX)),
    }
}
