//! Mock upstream
