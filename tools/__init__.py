"""Product tools that are not part of the node pack: the demo run (make main) and the workflow generator."""
