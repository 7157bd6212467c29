/* runtime/cpu64.c — the cpu backend again, in double precision: the oracle for the
 * tests' finite differences (see RT_REAL in cpu.c). Not used for training. */
#define RT_REAL double
#define RT_BACKEND rt_cpu64_backend
#define RT_BACKEND_NAME "cpu64"
#include "cpu.c"
