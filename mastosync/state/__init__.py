"""What mastosync keeps under sync.state_dir: resume state, run history, the run lock, reports and event logs."""
