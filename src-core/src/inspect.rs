//! Detection engine for secrets and PII (see issue: detection engine).
