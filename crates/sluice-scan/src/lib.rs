//! sluice-scan
