"""Reading labels tables: agreement with people and its intervals, calibration, biases, reports, plots."""
