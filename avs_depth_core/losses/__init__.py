"""Training losses: SILog (supervised metric depth) and the Monodepth2 photometric and smoothness terms."""
