"""What every stage shares: the path rule, the name -> factory tables, the protocol's names
and the names of everything the project writes to MLflow."""
