/* Built by tests/symbolize.rs with gcc, in several ways (-g or not,
 * stripped, with a separate debug file). static_caller is a static
 * function: only .symtab names it. */

#include <setjmp.h>

static void *volatile sink;
static jmp_buf back;

#ifdef VARIANT
int helper_variant = VARIANT; /* another build, another build-id */
#endif

__attribute__((noinline)) static void *return_address(void)
{
	return __builtin_return_address(0);
}

__attribute__((noinline)) static void *static_caller(void)
{
	void *r = return_address(); /* THE CALL */
	sink = r;
	return r;
}

/* The return address of the call above: inside static_caller. */
void *helper_return_address(void)
{
	return static_caller();
}

/* Where static_caller starts. */
void *helper_static_caller(void)
{
	return (void *)static_caller;
}

/* A call that is its caller's last instruction: its return address is
 * the first byte after ends_in_call, where the next function may start. */
__attribute__((noinline, noreturn)) static void leave_by_longjmp(void)
{
	sink = __builtin_return_address(0);
	longjmp(back, 1);
}

__attribute__((noinline)) static void ends_in_call(void)
{
	leave_by_longjmp(); /* THE LAST CALL */
}

void *helper_tail_return_address(void)
{
	if (!setjmp(back))
		ends_in_call();
	return sink;
}

void *helper_ends_in_call(void)
{
	return (void *)ends_in_call;
}
