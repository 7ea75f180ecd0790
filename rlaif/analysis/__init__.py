"""Reading labels tables: agreement with people and its intervals, calibration, biases, the label-quality
methods, the report, plots and the HTML page. Nothing in the labeling core imports this package."""
