//! sluice-upstream
