//! Placeholder: the TDMR/PAMT planner is being written.
