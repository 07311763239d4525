/* cli.h: the commands that read an image without FUSE
 * (imgfs info|ls|cat|cp|tar IMAGE ...).
 */
#ifndef IMGFS_CLI_H
#define IMGFS_CLI_H

#include <stdbool.h>

/* True when name is one of the commands cli_main runs. */
bool cli_is_command(const char *name);
/* Runs argv[0] (the command name) with its arguments; returns the exit
 * status. */
int cli_main(int argc, char **argv);

#endif
