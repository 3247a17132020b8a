/*
 * cmds.h - the subcommands of the airouter program.
 */
#ifndef AIR_TOOLS_CMDS_H
#define AIR_TOOLS_CMDS_H

/* Each returns the process exit status. argv[0] is the subcommand name. */
int air__cmd_mock(int argc, char **argv);
int air__cmd_chat(int argc, char **argv);
int air__cmd_bench(int argc, char **argv);
int air__cmd_serve(int argc, char **argv);

#endif
