"""What every stage of the work shares: run directories, weights loading, checkpoints, devices."""
