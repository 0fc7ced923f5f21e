"""Running the stream processors: the Faust app and its agents, the splitter, the supervisor."""
