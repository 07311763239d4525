/* cp.c: placeholder until the copy lands. */
#include "cli-int.h"

int cli_cmd_cp(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return CLI_EXIT_FAIL;
}
