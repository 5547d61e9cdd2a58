// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The advanced monitor with a BPF_MAP_TYPE_BLOOM_FILTER pre-filter (5.16+). A separate object
 * because a map's type is fixed in the object and 5.10 refuses to create a bloom map at all: the
 * loader embeds both and picks this one only where the "bloom filter" feature probe succeeds.
 */
#define TAPIO_ADVANCED_BLOOM 1
#include "advanced.bpf.c"
