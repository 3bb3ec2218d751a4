"""In-repo fakes of the services nr-archiver talks to (see fakes.nerdgraph)."""
