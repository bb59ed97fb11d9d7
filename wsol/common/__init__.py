"""What every stage shares: the path rule and the name -> factory tables."""
