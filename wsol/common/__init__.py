"""What every stage shares: the path rule, the name -> factory tables, the protocol's names."""
