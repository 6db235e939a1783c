#![no_std]
// This file exists so agentd can build-depend on this crate (see aya-build).
