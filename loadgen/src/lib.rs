//! loadgen library
