/*
 * xnu_layout.c - sizeof/offsetof of every kernel-facing struct in mt_xnu.h as
 * gcc lays them out, so sim/tests/layout.rs can compare them with the
 * reference tables of XNU's real layouts.
 *
 * Context: data only.
 */
#include "mt_xnu.h"

struct mt_xnu_layout_row {
    const char *type;
    const char *field; /* "__sizeof__" / "__alignof__" rows carry the value in offset */
    size_t offset;
    size_t size;
};

#define F(tag, type, field) {tag, #field, offsetof(type, field), sizeof(((type *)0)->field)}
#define S(tag, type) {tag, "__sizeof__", sizeof(type), 0}, {tag, "__alignof__", _Alignof(type), 0}

const struct mt_xnu_layout_row mt_xnu_layout[] = {
    F("kmod_info", kmod_info_t, next),
    F("kmod_info", kmod_info_t, info_version),
    F("kmod_info", kmod_info_t, id),
    F("kmod_info", kmod_info_t, name),
    F("kmod_info", kmod_info_t, version),
    F("kmod_info", kmod_info_t, reference_count),
    F("kmod_info", kmod_info_t, reference_list),
    F("kmod_info", kmod_info_t, address),
    F("kmod_info", kmod_info_t, size),
    F("kmod_info", kmod_info_t, hdr_size),
    F("kmod_info", kmod_info_t, start),
    F("kmod_info", kmod_info_t, stop),
    S("kmod_info", kmod_info_t),
    F("kmod_reference", kmod_reference_t, next),
    F("kmod_reference", kmod_reference_t, info),
    S("kmod_reference", kmod_reference_t),
    F("sysctl_oid", struct sysctl_oid, oid_parent),
    F("sysctl_oid", struct sysctl_oid, oid_link),
    F("sysctl_oid", struct sysctl_oid, oid_number),
    F("sysctl_oid", struct sysctl_oid, oid_kind),
    F("sysctl_oid", struct sysctl_oid, oid_arg1),
    F("sysctl_oid", struct sysctl_oid, oid_arg2),
    F("sysctl_oid", struct sysctl_oid, oid_name),
    F("sysctl_oid", struct sysctl_oid, oid_handler),
    F("sysctl_oid", struct sysctl_oid, oid_fmt),
    F("sysctl_oid", struct sysctl_oid, oid_descr),
    F("sysctl_oid", struct sysctl_oid, oid_version),
    F("sysctl_oid", struct sysctl_oid, oid_refcnt),
    S("sysctl_oid", struct sysctl_oid),
    F("sysctl_oid_list", struct sysctl_oid_list, slh_first),
    S("sysctl_oid_list", struct sysctl_oid_list),
    F("sysctl_req", struct sysctl_req, p),
    F("sysctl_req", struct sysctl_req, lock),
    F("sysctl_req", struct sysctl_req, oldptr),
    F("sysctl_req", struct sysctl_req, oldlen),
    F("sysctl_req", struct sysctl_req, oldidx),
    F("sysctl_req", struct sysctl_req, oldfunc),
    F("sysctl_req", struct sysctl_req, newptr),
    F("sysctl_req", struct sysctl_req, newlen),
    F("sysctl_req", struct sysctl_req, newidx),
    F("sysctl_req", struct sysctl_req, newfunc),
    S("sysctl_req", struct sysctl_req),
    F("mac_policy_conf", struct mac_policy_conf, mpc_name),
    F("mac_policy_conf", struct mac_policy_conf, mpc_fullname),
    F("mac_policy_conf", struct mac_policy_conf, mpc_labelnames),
    F("mac_policy_conf", struct mac_policy_conf, mpc_labelname_count),
    F("mac_policy_conf", struct mac_policy_conf, mpc_ops),
    F("mac_policy_conf", struct mac_policy_conf, mpc_loadtime_flags),
    F("mac_policy_conf", struct mac_policy_conf, mpc_field_off),
    F("mac_policy_conf", struct mac_policy_conf, mpc_runtime_flags),
    F("mac_policy_conf", struct mac_policy_conf, mpc_list),
    F("mac_policy_conf", struct mac_policy_conf, mpc_data),
    S("mac_policy_conf", struct mac_policy_conf),
    S("mac_policy_ops", struct mac_policy_ops),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_offset),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_name),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_flags),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_vp_offsets),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_vpp_offset),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_cred_offset),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_proc_offset),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_componentname_offset),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_context_offset),
    F("vnodeop_desc", struct vnodeop_desc, vdesc_transports),
    S("vnodeop_desc", struct vnodeop_desc),
    F("vnodeopv_desc", struct vnodeopv_desc, opv_desc_vector_p),
    F("vnodeopv_desc", struct vnodeopv_desc, opv_desc_ops),
    S("vnodeopv_desc", struct vnodeopv_desc),
    F("vnodeopv_entry_desc", struct vnodeopv_entry_desc, opve_op),
    F("vnodeopv_entry_desc", struct vnodeopv_entry_desc, opve_impl),
    S("vnodeopv_entry_desc", struct vnodeopv_entry_desc),
    F("vnop_mmap_args", struct vnop_mmap_args, a_desc),
    F("vnop_mmap_args", struct vnop_mmap_args, a_vp),
    F("vnop_mmap_args", struct vnop_mmap_args, a_fflags),
    F("vnop_mmap_args", struct vnop_mmap_args, a_context),
    S("vnop_mmap_args", struct vnop_mmap_args),
    F("vnop_mmap_check_args", struct vnop_mmap_check_args, a_desc),
    F("vnop_mmap_check_args", struct vnop_mmap_check_args, a_vp),
    F("vnop_mmap_check_args", struct vnop_mmap_check_args, a_flags),
    F("vnop_mmap_check_args", struct vnop_mmap_check_args, a_context),
    S("vnop_mmap_check_args", struct vnop_mmap_check_args),
    F("vnop_mnomap_args", struct vnop_mnomap_args, a_desc),
    F("vnop_mnomap_args", struct vnop_mnomap_args, a_vp),
    F("vnop_mnomap_args", struct vnop_mnomap_args, a_context),
    S("vnop_mnomap_args", struct vnop_mnomap_args),
    F("vnop_pagein_args", struct vnop_pagein_args, a_desc),
    F("vnop_pagein_args", struct vnop_pagein_args, a_vp),
    F("vnop_pagein_args", struct vnop_pagein_args, a_pl),
    F("vnop_pagein_args", struct vnop_pagein_args, a_pl_offset),
    F("vnop_pagein_args", struct vnop_pagein_args, a_f_offset),
    F("vnop_pagein_args", struct vnop_pagein_args, a_size),
    F("vnop_pagein_args", struct vnop_pagein_args, a_flags),
    F("vnop_pagein_args", struct vnop_pagein_args, a_context),
    S("vnop_pagein_args", struct vnop_pagein_args),
};

const size_t mt_xnu_layout_len = sizeof(mt_xnu_layout) / sizeof(mt_xnu_layout[0]);
