"""The fleet node: connects out to the supervisor and runs sessions through backends."""
