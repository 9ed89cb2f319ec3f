// The shipped command line; its commands are in RemedyCLI. The developer tools (demo, phony images) are remedy-dev.
import RemedyCLI

RemedyCommandLine.main()
