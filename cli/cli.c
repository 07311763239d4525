/* cli.c: dispatches the commands without FUSE. Not written yet: no
 * command is recognised, so every argument list goes to the mount. */
#include "cli.h"

#include <stdio.h>

bool cli_is_command(const char *name)
{
	(void)name;
	return false;
}

int cli_main(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "imgfs: %s: unknown command\n", argv[0]);
	return 2;
}
