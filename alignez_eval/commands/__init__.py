"""One module per subcommand: `configure(parser)` adds its flags, `main(args)` runs it.

Each module imports the code that does the work inside `main`, not at its top: `alignez-eval CMD
--help` imports the command's module to build its flags, and the work's modules pull torch (5.6 s,
measured on AMD EPYC, 2 cores) where the help costs 0.03 s.
"""
