/*
 * A file of the providers layer that includes a core header. It must NOT
 * compile: providers/ sees only providers/, util/ and include/ (adapters are
 * pure translators). ctest "layering/providers_cannot_include_core" expects
 * this build to fail.
 */
#include "route.h"

int air__layer_probe(void);

int
air__layer_probe(void)
{
    return 0;
}
